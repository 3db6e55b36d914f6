"""The mapping engine and load_weights on vitkit's own checkpoints (no HF needed)."""
import pytest
import torch

import vitkit
from vitkit.train import TrainConfig, build_optimizer
from vitkit.train import checkpoint as ckpt
from vitkit.weights import KeyMap, Rule, detect_format, export, load_weights
from vitkit.weights.mapping import FUSE_QKV, compile_pattern
from weights_helpers import jitter_


def test_patterns_and_rules_run_both_ways():
    pattern = compile_pattern("blocks.{i}.attn.{p}")
    assert pattern.match("blocks.11.attn.weight").groupdict() == {"i": "11", "p": "weight"}
    assert pattern.match("blocks.x.attn.weight") is None
    km = KeyMap("toy", "toy", (Rule("qkv.{p}", ("q.{p}", "k.{p}", "v.{p}"), FUSE_QKV), Rule("a", "b")),
                ignore=(r"^decoder\.",))
    theirs = {"q.weight": torch.ones(2, 3), "k.weight": 2 * torch.ones(2, 3), "v.weight": 3 * torch.ones(2, 3),
              "b": torch.zeros(1), "q.bias": torch.ones(2), "decoder.x": torch.ones(1), "extra": torch.ones(1)}
    ours, unmapped, ignored, source = km.to_vitkit(theirs)
    assert ours["qkv.weight"].shape == (6, 3) and ours["qkv.weight"][4, 0] == 3
    assert unmapped == ["q.bias", "extra"] and ignored == ["decoder.x"]  # a lone q.bias is reported, not lost
    assert source["qkv.weight"] == "q.weight"
    back, rest = km.from_vitkit(ours)
    assert not rest and all(torch.equal(back[k], theirs[k]) for k in back)


def test_deit_is_recognised_and_mapped():
    """DeiT used to be refused (no distillation token); now it maps onto a distilled ViT (see test_deit.py)."""
    km = detect_format(["deit.embeddings.distillation_token", "deit.embeddings.cls_token"])
    assert km.name == "hf-deit"
    ours, unmapped, _, _ = km.to_vitkit({"deit.embeddings.distillation_token": torch.zeros(1, 1, 8),
                                         "distillation_classifier.weight": torch.zeros(3, 8)})
    assert set(ours) == {"dist_token", "head_dist.weight"} and not unmapped


def test_training_run_folder_loads_and_resamples(tmp_path):
    model = jitter_(vitkit.create_model("vit_nano_patch4_28"))
    opt = build_optimizer(model, TrainConfig())
    ckpt.save_checkpoint(tmp_path, model, opt, epoch=1, step=10)
    ckpt.write_config(tmp_path, TrainConfig(), {"model_config": {**model.cfg.__dict__}})
    same = vitkit.create_model("vit_nano_patch4_28")
    report = load_weights(same, tmp_path)  # model.safetensors is found; train_state.pt is not weights
    assert report.format == "vitkit" and not report.resampled
    assert all(torch.equal(same.state_dict()[k], v) for k, v in model.state_dict().items())
    bigger = vitkit.create_model("vit_nano_patch4_28", img_size=40, pretrained=tmp_path)  # 7x7 -> 10x10
    assert bigger.pos_embed.weight.shape == (1, 101, 64)
    assert torch.equal(bigger.pos_embed.weight[:, 0], model.pos_embed.weight[:, 0])  # the class token's row is kept
    with torch.no_grad():
        assert torch.isfinite(bigger(torch.randn(1, 1, 40, 40))).all()


def test_other_architecture_is_named_and_non_strict_reports(tmp_path):
    export(vitkit.create_model("vit_nano_patch4_28"), tmp_path, to="vitkit")
    other = vitkit.create_model("vit_mnist_patch4_28")
    with pytest.raises(ValueError) as e:
        load_weights(other, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "unexpected keys: ['cls_token'" in msg
    assert "patch_embed.proj.weight: checkpoint (64, 1, 4, 4) vs model (128, 1, 4, 4)" in msg
    report = load_weights(vitkit.create_model("vit_nano_patch4_28", num_classes=3), tmp_path, strict=False)
    assert set(report.mismatched) == {"head.weight: checkpoint (10, 64) vs model (3, 64)",
                                      "head.bias: checkpoint (10,) vs model (3,)"}
    assert not report.missing and report.loaded == len(report_keys(tmp_path)) - 2 and "loaded" in str(report)


def test_hybrid_round_trips_in_vitkit_names(tmp_path):
    """vitkit's hybrid stem has no HF or timm counterpart with the same names (BiT, ResNetV2)."""
    model = jitter_(vitkit.create_model("vit_hybrid_nano_28"))
    export(model, tmp_path / "v", to="vitkit")
    back = vitkit.create_model("vit_hybrid_nano_28", pretrained=tmp_path / "v")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    for to in ("hf", "timm"):
        with pytest.raises(ValueError, match="hybrid"):
            export(model, tmp_path / to, to=to)


def report_keys(folder):
    from vitkit.weights.io import load_weights_file
    return load_weights_file(folder / "model.safetensors")
