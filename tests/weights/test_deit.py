"""HF DeiT (``DeiTForImageClassificationWithTeacher``) -> vitkit's distilled ViT, with HF as the oracle.

Checkpoints are written by ``save_pretrained`` (the on-disk names), read back by vitkit and compared
in fp32 eval mode: both heads, their average and every block's hidden state.
"""
import torch

from vitkit.models.vit import VisionTransformer
from vitkit.weights import from_checkpoint, load_weights
from weights_helpers import jitter_

TOL = 1e-5


def _hf_deit(transformers, cls=None, **kw):
    torch.manual_seed(0)
    cfg = transformers.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  image_size=32, patch_size=4, num_channels=3, num_labels=10, **kw)
    cls = cls or transformers.DeiTForImageClassificationWithTeacher
    return jitter_(cls(cfg)).eval()


def test_hf_deit_with_teacher_parity_from_save_pretrained(transformers, tmp_path):
    hf = _hf_deit(transformers)
    hf.save_pretrained(tmp_path)
    model = from_checkpoint(tmp_path).eval()
    cfg = model.cfg
    assert cfg.distilled and model.num_prefix_tokens == 2 and cfg.num_classes == 10 and cfg.norm_eps == 1e-12
    assert (cfg.img_size, cfg.patch_size, cfg.num_heads, cfg.depth) == (32, 4, 4, 2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = hf(x, output_hidden_states=True)
        inter = model.forward_intermediates(x)
        logits = model(x)                                       # eval: the two heads' average
        model.train()
        cls, dist = model.forward_head(inter["features"])       # train: both heads
    assert max((a - b).abs().max().item() for a, b in zip(out.hidden_states, inter["hidden_states"],
                                                          strict=True)) < TOL
    assert (out.logits - logits).abs().max() < TOL
    assert (out.cls_logits - cls).abs().max() < TOL and (out.distillation_logits - dist).abs().max() < TOL


def test_hf_deit_in_memory_names_and_headless_model(transformers, tmp_path):
    hf = _hf_deit(transformers)
    torch.save(hf.state_dict(), tmp_path / "weights.pth")     # transformers 5 in-memory names (q_proj)
    hf.save_pretrained(tmp_path / "disk")
    ref = from_checkpoint(tmp_path / "disk")
    model = VisionTransformer(ref.cfg)
    report = load_weights(model, tmp_path / "weights.pth")
    assert "DeiT" in report.format
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    base = _hf_deit(transformers, cls=transformers.DeiTModel)  # no heads; its class-token pooler is reported
    base.save_pretrained(tmp_path / "base")
    enc = from_checkpoint(tmp_path / "base").eval()
    assert enc.cfg.distilled and enc.cfg.num_classes == 0
    assert {k.split(".")[0] for k in load_weights(enc, tmp_path / "base").ignored} == {"pooler"}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (base(x).last_hidden_state - enc.forward_features(x)).abs().max() < TOL
