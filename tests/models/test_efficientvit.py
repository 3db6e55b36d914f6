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


# ---- the fused inference mode (issue 19): BatchNorm folded into the convs, channels-last, oneDNN convs
def _rel(a, b):
    """max |a - b| / max |b|."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max()).item()


def _random_norms(model, seed=1, calibrate=None):
    """Non-trivial BatchNorm statistics and affine parameters (a trained model's, not the init's 0 / 1).

    ``calibrate`` (a batch): the running statistics are first measured on it in training mode (else
    an untrained model's maps shrink layer by layer and its output hardly depends on the input), then
    every statistic and affine parameter is perturbed at random."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        if calibrate is not None:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None                                           # the plain average of the batches
            model.train()(calibrate)
            model.eval()
        for m in norms:
            n = m.num_features
            m.running_mean.add_(torch.randn(n, generator=g) * 0.1 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.copy_((torch.rand(n, generator=g) + 0.5) * torch.where(torch.rand(n, generator=g) < 0.2,
                                                                             -1.0, 1.0))
            m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            m.momentum = 0.1
    return model


def _ops(fn, *args):
    """How many times fn(*args) calls each dispatcher op, by name ("aten.convolution", ...)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        fn(*args)
    return rec.calls


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups,kernel,stride", [(1, 1, 1), (1, 3, 2), (8, 3, 1), (2, 1, 1)])
def test_fold_batchnorm_is_conv_then_eval_batchnorm(bias, groups, kernel, stride):
    from vitkit.models.efficientvit import FusedConv2d, fold_batchnorm
    conv = nn.Conv2d(8, 16, kernel, stride, kernel // 2, groups=groups, bias=bias)
    bn = _random_norms(nn.Sequential(nn.BatchNorm2d(16, eps=1e-3)))[0].eval()
    x = torch.randn(2, 8, 9, 11)
    ref = bn(conv(x))
    w, b = fold_batchnorm(conv, bn)
    assert _rel(nn.functional.conv2d(x, w, b, stride, kernel // 2, 1, groups), ref) < 1e-6
    with torch.inference_mode():
        for fused in (FusedConv2d(conv, bn, nn.Hardswish()), FusedConv2d(conv, bn, nn.GELU())):  # post-op, or after
            assert _rel(fused(x), fused.act(ref)) < 1e-6
            assert _rel(fused(x.contiguous(memory_format=torch.channels_last)), fused.act(ref)) < 1e-6


def _fused_pair(name="efficientvit_b0", **kw):
    """An EfficientViT with non-trivial BatchNorms (eval mode) and its fused copy."""
    torch.manual_seed(0)
    kw = {"zero_last_gamma": False, "dynamic_img_size": True, "drop_path_rate": 0.0, **kw}
    m = create_model(name, **kw)
    c = m.cfg.in_chans
    m = _random_norms(m, calibrate=torch.randn(8, c, 64, 64) if c == 3 else torch.randn(8, c, 28, 28)).eval()
    return m, m.fuse()


@pytest.mark.parametrize("name,shape", [("efficientvit_b0", (2, 3, 96, 64)), ("efficientvit_nano_28", (3, 1, 28, 28))])
def test_fused_model_computes_the_unfused_model_in_eval_mode_fp32(name, shape):
    m, f = _fused_pair(name)
    x = torch.randn(*shape)
    with torch.inference_mode():
        ref, out = m(x), f(x)
        assert (ref[0] - ref[1]).abs().max() > 0.1 * ref.abs().max()       # a function of the input
        assert _rel(out, ref) < 1e-5
        ri, fi = m.forward_intermediates(x), f.forward_intermediates(x)
        for a, b in zip(fi["stages"], ri["stages"]):
            assert a.shape == b.shape and _rel(a, b) < 1e-5
            assert a.is_contiguous(memory_format=torch.channels_last)     # every map channels-last
        assert _rel(f.forward_features(x), ri["features"]) < 1e-5
        unpacked = m.fuse(channels_last=False)
        assert _rel(unpacked(x), ref) < 1e-5
        assert unpacked.forward_features(x).is_contiguous()


def test_fused_model_runs_onednn_convs_and_plain_convs_where_those_are_asked_for():
    """The CPU fast path is oneDNN's conv with the activation fused; vitkit's fast-path switch
    (``fast_linear(False)``, which the FLOP counter uses) and input gradients take F.conv2d, same function."""
    from vitkit.layers import fast_linear
    from vitkit.models.efficientvit import _ONEDNN_CONV
    m, f = _fused_pair("efficientvit_nano_28")
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        ops = _ops(f, x)
        if _ONEDNN_CONV:
            assert ops["mkldnn._convolution_pointwise"] == 47 and not ops.keys() & {"aten.conv2d", "aten.convolution"}
        assert not any("batch_norm" in o for o in ops)
        if _ONEDNN_CONV:  # the convs' Hardswish is their post-op: only the head's (after its LayerNorm) is left
            assert ops["aten.hardswish"] == 1 and _ops(m, x)["aten.hardswish"] > 10
        with fast_linear(False):
            ops = _ops(f, x)
            assert ops["aten.conv2d"] + ops["aten.convolution"] == 47 and "mkldnn._convolution_pointwise" not in ops
            assert not any("batch_norm" in o for o in ops)
            assert _rel(f(x), m(x)) < 1e-5
    xg = x.clone().requires_grad_(True)                                    # a saliency map
    f(xg).logsumexp(-1).sum().backward()
    xr = x.clone().requires_grad_(True)
    m(xr).logsumexp(-1).sum().backward()
    assert _rel(xg.grad, xr.grad) < 1e-4


def test_fused_model_in_bf16_autocast_matches_the_unfused_model_to_bf16_precision():
    m, f = _fused_pair()
    x = torch.randn(2, 3, 96, 64)
    with torch.inference_mode():
        ref32 = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref16, out16 = m(x), f(x)
            feats = f.forward_features(x)
    assert out16.dtype == ref16.dtype == torch.bfloat16 and feats.dtype == torch.bfloat16
    assert feats.is_contiguous(memory_format=torch.channels_last)
    # bf16 keeps 8 bits of mantissa (rounding 2^-9 = 2e-3 per op); through ~40 layers both land ~1e-2 off fp32
    assert _rel(out16, ref16) < 5e-2 and _rel(out16, ref32) < 5e-2 and _rel(ref16, ref32) < 5e-2
    assert _rel(out16, ref32) < 2 * _rel(ref16, ref32) + 5e-3                # no further off fp32 than autocast's own
    assert torch.corrcoef(torch.stack([out16.float().flatten(), ref32.flatten()]))[0, 1] > 0.999


def test_channels_last_and_contiguous_inputs_give_the_same_result():
    m, f = _fused_pair()
    x = torch.randn(2, 3, 64, 96)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert _rel(f(xc), f(x)) < 1e-6 and _rel(f(xc), m(x)) < 1e-5
        assert _rel(m(xc), m(x)) < 1e-6                                     # the unfused model too
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _rel(f(xc), f(x)) < 1e-2


def test_fused_model_is_inference_only_and_leaves_the_original_alone():
    from vitkit.models.efficientvit import fuse_for_inference
    torch.manual_seed(0)
    m = create_model("efficientvit_nano_28", zero_last_gamma=False).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    f = fuse_for_inference(m)
    assert f.fused and not f.training and not m.fused and m.training      # the original: untouched, still training
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert not any(isinstance(x, nn.BatchNorm2d) for x in f.modules())
    assert not any("running_mean" in k for k in f.state_dict())
    assert not any(p.requires_grad for p in f.parameters())
    with pytest.raises(RuntimeError, match="fused for inference"):
        f.train()
    with pytest.raises(RuntimeError, match="fused for inference"):
        f.train(True)
    assert f.eval() is f and f.train(False) is f and not f.training
    with pytest.raises(ValueError, match="already fused"):
        f.fuse()
    with pytest.raises(TypeError, match="EfficientViT"):
        fuse_for_inference(nn.Conv2d(1, 1, 1))
    # a model fused while training folds the running statistics, i.e. computes the eval-mode function
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        assert _rel(f(x), m.eval()(x)) < 1e-5
    import copy
    g = copy.deepcopy(f)                                                    # still fused, still refuses
    assert g.fused and _rel(g(x), f(x)) == 0
    with pytest.raises(RuntimeError, match="fused for inference"):
        g.train()


def test_linear_attention_takes_channels_last_maps():
    from vitkit.layers import MultiScaleLinearAttention
    a = MultiScaleLinearAttention(32, 24, head_dim=8, scales=(3, 5)).eval()
    x = torch.randn(2, 32, 7, 9)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y, yc = a(x), a(xc)
        qs, qcs = a.multi_scale_qkv(x), a.multi_scale_qkv(xc)
    assert y.is_contiguous() and yc.is_contiguous(memory_format=torch.channels_last)
    assert _rel(yc, y) < 1e-5
    for q, qc in zip(qs, qcs):  # equal up to rounding: oneDNN may pick another conv kernel for channels-last input
        assert q.shape == qc.shape == (2, 3 * 4, 63, 8) and _rel(qc, q) < 1e-5


@pytest.mark.parametrize("stride,height", [(1, 23), (2, 23), (2, 24)])
def test_banded_convs_compute_the_chain_whole(monkeypatch, stride, height):
    """An MBConv (and a DSConv) run in row bands of every height equals the chain run whole: the bands
    read their receptive field, with zero rows past the top and bottom edges."""
    import vitkit.models.efficientvit as ev
    from vitkit.models.efficientvit import DSConv
    if not ev._ONEDNN_CONV:
        pytest.skip("no oneDNN: the chain always runs whole")
    torch.manual_seed(0)
    for block in (MBConv(8, 12, 4.0, stride=stride), DSConv(8, 12, 1e-5)):
        _random_norms(nn.Sequential(block))
        convs = [ev.FusedConv2d(c.conv, c.norm, c.act) for c in block.children()]
        chain = ev.BandedConvs(*convs).to(memory_format=torch.channels_last)
        x = torch.randn(2, 8, height, 19).contiguous(memory_format=torch.channels_last)
        wide = max(c.weight.shape[1] * c.groups for c in convs if not c.pointwise)  # the k x k conv's input
        with torch.inference_mode():
            monkeypatch.setattr(ev, "BAND_BYTES", 1 << 40)
            whole = chain(x)
            assert _ops(chain, x)["mkldnn._convolution_pointwise"] == len(convs)
            assert _rel(whole, block.eval()(x)) < 1e-5
            for rows in (1, 3, 7):                                  # bands of 3 (the kernel), 3 and 7 input rows
                monkeypatch.setattr(ev, "BAND_BYTES", rows * 19 * wide * 4)
                assert chain._plan(x) is not None
                assert _ops(chain, x)["mkldnn._convolution_pointwise"] > 2 * len(convs)
                out = chain(x)
                assert out.shape == whole.shape and out.is_contiguous(memory_format=torch.channels_last)
                assert _rel(out, whole) < 1e-6
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out16, whole16 = chain(x), super(ev.BandedConvs, chain).forward(x)
                assert out16.dtype == torch.bfloat16 and _rel(out16, whole16) < 1e-2
            assert chain._plan(x.contiguous()) is None                           # channels-first: whole


def test_fused_model_in_bands_computes_the_unfused_model(monkeypatch):
    import vitkit.models.efficientvit as ev
    m, f = _fused_pair()
    x = torch.randn(2, 3, 96, 64)
    with torch.inference_mode():
        whole = f(x)
        monkeypatch.setattr(ev, "BAND_BYTES", 4096)                           # every MBConv and DSConv in bands
        calls = _ops(f, x)["mkldnn._convolution_pointwise"]
        assert calls > 3 * sum(1 for c in f.modules() if isinstance(c, ev.FusedConv2d)) or not ev._ONEDNN_CONV
        banded = f(x)
        assert _rel(banded, m(x)) < 1e-5 and _rel(banded, whole) < 1e-6
