"""EfficientViT: MBConv, the published B0-B3 sizes (mit-han-lab/efficientvit backbone.py + cls.py;
parameter counts of timm's model cards), forward/backward on the digits config, API and input checks."""
import pytest
import torch
from torch import nn

from vitkit.layers.mlp import MBConv
from vitkit.models import EfficientViT, create_model, list_models


def test_mbconv_expand_depthwise_project():
    m = MBConv(8, 12, expand_ratio=4, stride=2)
    assert m.inverted_conv.conv.weight.shape == (32, 8, 1, 1)
    assert m.depth_conv.conv.weight.shape == (32, 1, 3, 3) and m.depth_conv.conv.groups == 32
    assert m.point_conv.conv.weight.shape == (12, 32, 1, 1) and isinstance(m.point_conv.act, nn.Identity)
    assert all(isinstance(c.norm, nn.BatchNorm2d) and c.conv.bias is None
               for c in (m.inverted_conv, m.depth_conv, m.point_conv))
    assert m(torch.randn(2, 8, 9, 10)).shape == (2, 12, 5, 5)
    f = MBConv(8, fewer_norm=True)  # EfficientViT's FFN: bias, no norm on expand/depthwise
    assert isinstance(f.inverted_conv.norm, nn.Identity) and f.inverted_conv.conv.bias is not None
    assert isinstance(f.point_conv.norm, nn.BatchNorm2d) and f.point_conv.conv.bias is None
    assert f(torch.randn(1, 8, 7, 7)).shape == (1, 8, 7, 7)


# widths / depths / attention head dim / head widths from mit-han-lab/efficientvit; parameter counts
# (1000 classes) from timm's efficientvit_b{0..3}.r224_in1k model cards: 3.4, 9.1, 24.3, 48.6 M.
@pytest.mark.parametrize("name,widths,depths,head_dim,head,millions", [
    ("efficientvit_b0", (8, 16, 32, 64, 128), (1, 2, 2, 2, 2), 16, (1024, 1280), 3.4),
    ("efficientvit_b1", (16, 32, 64, 128, 256), (1, 2, 3, 3, 4), 16, (1536, 1600), 9.1),
    ("efficientvit_b2", (24, 48, 96, 192, 384), (1, 3, 4, 4, 6), 32, (2304, 2560), 24.3),
    ("efficientvit_b3", (32, 64, 128, 256, 512), (1, 4, 6, 6, 9), 32, (2304, 2560), 48.6),
])
def test_published_sizes(name, widths, depths, head_dim, head, millions):
    m = create_model(name, device="meta")
    c = m.cfg
    assert (c.widths, c.depths, c.head_dim, c.head_widths, c.expand_ratio, c.scales) == (
        widths, depths, head_dim, head, 4.0, (5,))
    assert m.num_features == widths[-1] and m.input_size == (3, 224, 224)
    n = sum(p.numel() for p in m.parameters())
    assert abs(n / 1e6 - millions) < 0.05, n
    attn = [b.context for s in m.stages for b in s if hasattr(b, "context")]
    assert len(attn) == depths[3] + depths[4] and attn[0].heads == widths[3] // head_dim


def test_registered():
    assert {"efficientvit_b0", "efficientvit_b1", "efficientvit_b2", "efficientvit_b3",
            "efficientvit_nano_28"} <= set(list_models("efficientvit_*"))


def test_forward_backward_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    # with zero_last_gamma (the default) a residual branch's inner weights get no gradient on the first step
    m = create_model("efficientvit_nano_28", zero_last_gamma=False).train()
    logits = m(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_features_intermediates_head_and_reset():
    m = create_model("efficientvit_nano_28").eval()
    x = torch.randn(2, 1, 28, 28)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features, 4, 4)
    stages = m.forward_intermediates(x)["stages"]
    assert [tuple(t.shape[1:]) for t in stages] == [(16, 14, 14), (24, 14, 14), (32, 7, 7), (64, 7, 7), (96, 4, 4)]
    assert torch.allclose(stages[-1], feats)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 256)
    assert torch.allclose(m.forward_head(feats), m(x), atol=1e-6)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and torch.count_nonzero(m(x)) == 0       # zero-initialised head
    m.reset_classifier(0)
    assert m(x).shape == (2, 256)
    assert m.no_weight_decay() == set()


def test_input_checks_and_any_resolution():
    m = create_model("efficientvit_nano_28").eval()
    with pytest.raises(ValueError, match="1 input channel"):
        m(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        m(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(torch.randn(1, 28, 28))
    dyn = create_model("efficientvit_nano_28", dynamic_img_size=True).eval()
    assert dyn(torch.randn(1, 1, 56, 40)).shape == (1, 10)
    with pytest.raises(ValueError, match="5 entries"):
        create_model("efficientvit_nano_28", depths=(1, 1, 1))
    assert isinstance(create_model("efficientvit_b0", device="meta"), EfficientViT)


# ---- the official training recipe (issue 23, item 5): mit-han-lab/efficientvit
# applications/efficientvit_cls/train_efficientvit_cls_model.py (--last_gamma 0, apply_drop_func on
# backbone.stages), apps/utils/init.py (zero_last_gamma), models/nn/drop.py (apply_droppath) and
# configs/imagenet/{default,efficientvit_b3}.yaml (backbone_drop: droppath 0.05, 0.1 for B3).
def _residual_branches(m):
    """(block, its residual branch) of every x + f(x) in the model, input to output."""
    from vitkit.models.efficientvit import EfficientViTBlock, Residual
    out = []
    for mod in m.modules():
        if isinstance(mod, Residual):
            out.append((mod, mod.fn))
        elif isinstance(mod, EfficientViTBlock):
            out += [(mod, mod.context), (mod, mod.local)]
    return out


@pytest.mark.parametrize("name,rate", [("efficientvit_b0", 0.05), ("efficientvit_b1", 0.05),
                                       ("efficientvit_b2", 0.05), ("efficientvit_b3", 0.1),
                                       ("efficientvit_nano_28", 0.05)])
def test_training_defaults_are_the_official_recipe(name, rate):
    c = create_model(name, device="meta").cfg
    assert c.drop_path_rate == rate and c.zero_last_gamma is True


def test_zero_last_gamma_makes_every_residual_block_start_as_the_identity():
    torch.manual_seed(0)
    m = create_model("efficientvit_nano_28")
    branches = _residual_branches(m)
    # nano: 1 stem DSConv + 1 residual MBConv (stage 2's second) + 2 x (2 + 2) attention-stage modules
    assert len(branches) == 10
    last = [[b for b in f.modules() if isinstance(b, nn.BatchNorm2d)][-1] for _, f in branches]
    assert all(torch.count_nonzero(bn.weight) == 0 for bn in last)            # gamma = 0 ...
    others = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d) and all(b is not x for x in last)]
    assert others and all(torch.all(b.weight == 1) for b in others)          # ... on the last BN only
    x = torch.randn(2, 16, 14, 14)
    for mode in (m.train, m.eval):
        mode()
        assert torch.equal(m.stem[1](x), x)                                   # the stem's residual DSConv
        y = torch.randn(2, 64, 7, 7)
        assert torch.equal(m.stages[2][1](y), y)                              # an EfficientViT block
    off = create_model("efficientvit_nano_28", zero_last_gamma=False).eval()
    assert not torch.equal(off.stem[1](x), x)


def test_zero_last_gamma_only_starts_training_so_loaded_weights_are_unchanged():
    """The flag sets initial weights only: the state dict's keys are the same either way (and with
    drop path, which has no weights), and a loaded checkpoint computes the same function."""
    torch.manual_seed(0)
    src = create_model("efficientvit_nano_28", zero_last_gamma=False, drop_path_rate=0.0).eval()
    dst = create_model("efficientvit_nano_28").eval()
    assert src.state_dict().keys() == dst.state_dict().keys()
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(dst(x), src(x))


def test_drop_path_decays_linearly_over_the_stages_residual_blocks():
    """apply_droppath: the i-th (0-based) of the n residual blocks of backbone.stages drops its branch with
    probability rate (i + 1) / n; the stem's residual DSConv is not in backbone.stages and never drops."""
    from vitkit.layers import DropPath
    m = create_model("efficientvit_b1", device="meta")
    rates = [mod.p for mod in m.stages.modules() if isinstance(mod, DropPath)]
    n = (2 - 1) + (3 - 1) + 2 * 3 + 2 * 4             # residual MBConvs of stages 1-2, context + local of 3-4
    assert len(rates) == n == 17
    assert rates == pytest.approx([0.05 * (i + 1) / n for i in range(n)])
    assert all(mod.p == 0 for mod in m.stem.modules() if isinstance(mod, DropPath))
    torch.manual_seed(0)
    m = create_model("efficientvit_nano_28", drop_path_rate=0.5, zero_last_gamma=False)
    x = torch.randn(8, 1, 28, 28)
    m.eval()
    assert torch.equal(m(x), m(x))                     # no drop in evaluation
    m.train()
    feats = [m.stages[3](m.stages[2](m.stages[1](m.stages[0](m.stem(x))))) for _ in range(2)]
    assert not torch.equal(*feats)                     # dropped branches in training
    with pytest.raises(ValueError, match="drop_path_rate"):
        create_model("efficientvit_nano_28", drop_path_rate=1.0)
