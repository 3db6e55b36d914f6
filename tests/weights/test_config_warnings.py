"""Loading into a model whose LayerNorm eps or activation differs from the checkpoint's config.json
computes another function: load_weights warns (UserWarning) naming the field and the fix. Before
issue 18 it only appended a note to the LoadReport (eps) or said nothing (activation)."""
import warnings

import pytest
import torch

import vitkit
from vitkit.weights import load_weights
from weights_helpers import hf_vit

SMALL = dict(img_size=32, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
             num_classes=10)


def test_eps_difference_warns_with_the_fix(transformers, tmp_path):
    hf_vit(transformers).save_pretrained(tmp_path)  # HF ViT: layer_norm_eps 1e-12
    model = vitkit.create_model("vit_base_patch16_224", **SMALL)  # vitkit's default eps 1e-6
    with pytest.warns(UserWarning, match=r"LayerNorm eps is 1e-12 .* model's norm_eps is 1e-06") as rec:
        load_weights(model, tmp_path)
    assert "build the model with norm_eps=1e-12" in str(rec[0].message)
    x = torch.randn(1, 3, 32, 32)
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():  # the warning is about real numbers: outputs differ, and the fix makes them equal
        assert (hf(x).logits - model.eval()(x)).abs().max() > 1e-5
        fixed = vitkit.create_model("vit_base_patch16_224", **SMALL, norm_eps=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the right model: no warning
            load_weights(fixed, tmp_path)
        assert (hf(x).logits - fixed.eval()(x)).abs().max() < 1e-5


def test_activation_difference_warns_with_the_fix(transformers, tmp_path):
    hf_vit(transformers, hidden_act="quick_gelu", layer_norm_eps=1e-6).save_pretrained(tmp_path)
    model = vitkit.create_model("vit_base_patch16_224", **SMALL)  # exact GELU
    with pytest.warns(UserWarning, match=r"MLP activation is 'quick_gelu' .* model's act is 'gelu'") as rec:
        load_weights(model, tmp_path)
    assert "build the model with act='quick_gelu'" in str(rec[0].message)
    # create_model adopts the checkpoint's activation and eps by itself, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adopted = vitkit.create_model("vit_base_patch16_224", **SMALL, pretrained=tmp_path)
    assert adopted.cfg.act == "quick_gelu" and adopted.cfg.norm_eps == 1e-6
