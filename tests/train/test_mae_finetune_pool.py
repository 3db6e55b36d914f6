"""MAE's fine-tuning head (models_vit.py with global_pool=True): fc_norm(mean(x)) with the pretrained final
norm dropped, and the pretrained sin-cos table fine-tuned as a learned one (issue 24, item 5)."""
import pytest
import torch

import vitkit
from vitkit.train.optim import layer_ids
from vitkit.train.tasks import load_backbone
from vitkit.weights import save_weights

ARGS = dict(num_classes=10, global_pool="avg")


def reference_logits(model, x):
    """The MAE fine-tuning forward written out from the paper's code: embed, + pos, blocks, mean over the
    patch tokens, fc_norm, head (no final norm on the tokens)."""
    t = model.patch_embed(x)
    t = t + model.pos_embed.weight
    for blk in model.blocks:
        t = blk(t)
    return model.head(model.fc_norm(t.mean(dim=1)))


def test_fc_norm_pools_then_normalises_and_drops_the_final_norm():
    torch.manual_seed(0)
    model = vitkit.create_model("vit_mnist_patch7_28", fc_norm=True, pos_embed="sincos_learn", **ARGS).eval()
    with torch.no_grad():  # non-trivial norm parameters, so that a norm in the wrong place shows
        model.fc_norm.weight.uniform_(0.5, 1.5)
        model.fc_norm.bias.normal_()
    x = torch.randn(3, 1, 28, 28)
    assert isinstance(model.norm, torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_logits(model, x), rtol=1e-5, atol=1e-5)
    assert "fc_norm.weight" in model.state_dict() and "norm.weight" not in model.state_dict()


def test_fc_norm_needs_average_pooling():
    with pytest.raises(ValueError, match="global_pool='avg'"):
        vitkit.create_model("vit_tiny_patch16_224", fc_norm=True, global_pool="token")


def test_learned_sincos_table_starts_as_the_fixed_one_and_trains():
    torch.manual_seed(0)
    fixed = vitkit.create_model("vit_mnist_patch7_28", pos_embed="sincos", **ARGS).eval()
    learned = vitkit.create_model("vit_mnist_patch7_28", pos_embed="sincos_learn", **ARGS).eval()
    learned.load_state_dict(fixed.state_dict(), strict=False)  # the sin-cos model stores no table: ours stays
    torch.testing.assert_close(learned.pos_embed.weight.detach(), fixed.pos_embed.weight)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(learned(x), fixed(x))
    learned(x).sum().backward()
    assert learned.pos_embed.weight.grad.abs().sum() > 0
    assert "pos_embed.weight" in learned.no_weight_decay()


def test_mae_finetune_model_loads_a_sincos_backbone(tmp_path):
    """A backbone pretrained with the fixed table and a final norm loads into the fine-tuning model: every
    block weight is taken, the norm is skipped, fc_norm starts at (1, 0), the table at the sin-cos values."""
    torch.manual_seed(0)
    src = vitkit.create_model("vit_mnist_patch7_28", pos_embed="sincos", **ARGS)
    with torch.no_grad():
        src.norm.weight.fill_(3.0)
    save_weights(tmp_path / "w.safetensors", src.state_dict())
    dst = vitkit.create_model("vit_mnist_patch7_28", fc_norm=True, pos_embed="sincos_learn", **ARGS)
    got = load_backbone(dst, tmp_path / "w.safetensors")
    assert "norm.weight" in got["skipped"] and "blocks.0.attn.qkv.weight" in got["loaded"]
    torch.testing.assert_close(dst.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)
    assert torch.all(dst.fc_norm.weight == 1) and torch.all(dst.fc_norm.bias == 0)
    torch.testing.assert_close(dst.pos_embed.weight.detach(), src.pos_embed.weight)
    # a checkpoint missing a block still fails, naming it
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("blocks.2.")}
    save_weights(tmp_path / "bad.safetensors", state)
    with pytest.raises(ValueError, match="blocks.2"):
        load_backbone(vitkit.create_model("vit_mnist_patch7_28", fc_norm=True, **ARGS), tmp_path / "bad.safetensors")


def test_layer_decay_puts_fc_norm_with_the_head():
    model = vitkit.create_model("vit_mnist_patch7_28", fc_norm=True, pos_embed="sincos_learn", **ARGS)
    ids, L = layer_ids(model)
    assert ids["fc_norm.weight"] == ids["head.weight"] == L + 1 and ids["pos_embed.weight"] == 0
