"""vitkit's bf16 fast paths (issue 19): under CPU bf16 autocast, on a CPU with native bf16, Linear runs
oneDNN's bf16 GEMM (bias, GELU and residual adds as post-ops), attention runs in bf16, the Block keeps its
residual stream in bf16. Each fast path against its fp32 reference, outputs and gradients, to bf16
tolerance; and the class-token ViT whose last block computes that token only, against the full forward."""
import pytest
import torch
import torch.nn.functional as F

import vitkit
import vitkit.layers.attention as A
import vitkit.layers.linear as L
from vitkit.layers import Attention, Block, Linear, Mlp, fast_linear

BF16 = torch.bfloat16


@pytest.fixture
def bf16_paths(monkeypatch, onednn_everywhere):
    """The bf16 fast paths on at any size, also on a CPU without native bf16 where oneDNN can emulate it
    (there they are off by default: ``native_bf16``)."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no oneDNN bf16")
    monkeypatch.setattr(L, "native_bf16", lambda: True)


@pytest.fixture
def calls(monkeypatch):
    """Records the dtype of every oneDNN GEMM (``linear``) and short_attention (``attention``) call."""
    seen = {"linear": [], "linear_add": [], "attention": []}
    gemm, gemm_add, heads = L._onednn, L._onednn_add, A._heads

    def spy_gemm(a, *args, **kw):
        seen["linear"].append(a.dtype)
        return gemm(a, *args, **kw)

    def spy_gemm_add(a, *args, **kw):
        seen["linear_add"].append(a.dtype)
        return gemm_add(a, *args, **kw)

    def spy_heads(qkv, nh):
        seen["attention"].append(qkv.dtype)
        return heads(qkv, nh)
    monkeypatch.setattr(L, "_onednn", spy_gemm)
    monkeypatch.setattr(L, "_onednn_add", spy_gemm_add)
    monkeypatch.setattr(A, "_heads", spy_heads)
    return seen


def _close(a, b, rel=2e-2):
    """a (bf16 run) against the fp32 reference b, relative to b's scale (bf16 keeps 8 mantissa bits)."""
    a, b = a.float(), b.float()
    assert (a - b).abs().max() <= rel * b.abs().max() + 1e-6, ((a - b).abs().max(), b.abs().max())


def _cos(a, b):
    return F.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


def test_bf16_fast_path_is_on_only_under_cpu_bf16_autocast(bf16_paths, monkeypatch):
    x = torch.randn(2, 3)
    assert not L.bf16_fast_path(x)
    with torch.autocast("cpu", BF16):
        assert L.bf16_fast_path(x)
        with fast_linear(False):
            assert not L.bf16_fast_path(x)
    with torch.autocast("cpu", torch.float16):
        assert not L.bf16_fast_path(x)
    monkeypatch.setattr(L, "native_bf16", lambda: False)  # no native bf16: autocast's own ops, as before
    with torch.autocast("cpu", BF16):
        assert not L.bf16_fast_path(x) and L._compute_dtype(x, torch.randn(4, 3)) is None


@pytest.mark.parametrize("shape,out,bias", [((3, 7, 64), 192, True), ((50, 384), 96, False), ((4, 17, 32), 256, True)])
def test_linear_under_bf16_autocast_runs_onednn_in_bf16_and_matches_fp32(shape, out, bias, bf16_paths, calls):
    torch.manual_seed(0)
    m = Linear(shape[-1], out, bias=bias)
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape[:-1], out)
    ref = m(x)
    ref_grads = torch.autograd.grad(ref, [x, *m.parameters()], g)
    calls["linear"].clear()
    with torch.autocast("cpu", BF16):
        y = m(x)
    assert y.dtype == BF16 and calls["linear"] == [BF16] and "OneDNN" in type(y.grad_fn).__name__
    grads = torch.autograd.grad(y, [x, *m.parameters()], g.to(BF16))
    _close(y, ref)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.float32                     # fp32 master weights get fp32 gradients
        _close(got, want)
    with torch.inference_mode(), torch.autocast("cpu", BF16):  # inference: no autograd node, same numbers
        _close(m(x), ref)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_residual_add_as_a_gemm_post_op(dtype, onednn_everywhere, bf16_paths, calls):
    """Linear(x, residual=r) = r + Linear(x), forward and backward (the residual's gradient is g)."""
    torch.manual_seed(0)
    m = Linear(48, 32)
    x, r = torch.randn(5, 6, 48, requires_grad=True), torch.randn(5, 6, 32, requires_grad=True)
    g = torch.randn(5, 6, 32)
    ref = r + F.linear(x, m.weight, m.bias)
    ref_grads = torch.autograd.grad(ref, [x, r, *m.parameters()], g)
    ctx = torch.autocast("cpu", BF16) if dtype == BF16 else torch.autocast("cpu", enabled=False)
    with ctx:
        y = m(x, residual=r)
    assert y.dtype == dtype and calls["linear_add"] == [dtype]
    grads = torch.autograd.grad(y, [x, r, *m.parameters()], g.to(dtype))
    check = _close if dtype == BF16 else (lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5))
    check(y, ref)
    for got, want in zip(grads, ref_grads):
        check(got, want)
    with torch.no_grad(), ctx:
        check(m(x, residual=r), ref)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_gelu_in_bf16(approximate, bf16_paths, calls):
    torch.manual_seed(0)
    m = Linear(64, 256)
    x = torch.randn(40, 64)
    ref = F.gelu(m(x), approximate=approximate)
    with torch.inference_mode(), torch.autocast("cpu", BF16):
        y = m.forward_gelu(x, approximate)
    assert y.dtype == BF16 and calls["linear"] == [torch.float32, BF16]
    _close(y, ref)


def test_frozen_model_keeps_a_packed_bf16_weight(bf16_paths):
    from vitkit.export import freeze
    torch.manual_seed(0)
    model = vitkit.create_model("vit_nano_patch4_28").eval()
    x = torch.randn(8, *model.input_size)
    frozen = freeze(model)
    with torch.no_grad(), torch.autocast("cpu", BF16):
        want, got = model(x), frozen(x)
    lin = frozen.blocks[0].attn.qkv
    assert BF16 in lin._packed.tensors and lin._packed.tensors[BF16].is_mkldnn
    _close(got, want, rel=1e-2)
    with torch.no_grad():
        assert torch.equal(frozen(x), model(x))                 # fp32: bit for bit, as before


@pytest.mark.parametrize("n", [9, 80])  # the transposed-scores layout, and the rows layout (ROWS_FROM_BF16)
def test_short_attention_in_bf16_matches_fp32_with_gradients(n, bf16_paths):
    torch.manual_seed(0)
    qkv = torch.randn(3, n, 3 * 32, requires_grad=True)
    g = torch.randn(3, n, 32)
    ref = A.merge_heads(A.attend(*A.split_heads(qkv, 4)))
    (ref_grad,) = torch.autograd.grad(ref, qkv, g)
    with torch.autocast("cpu", BF16):
        out = A.short_attention(qkv, 4)
    (grad,) = torch.autograd.grad(out, qkv, g.to(BF16))
    assert out.dtype == BF16 and grad.dtype == torch.float32
    _close(out, ref)
    _close(grad, ref_grad, rel=3e-2)


@pytest.mark.parametrize("rows", [False, True])
def test_both_score_layouts_are_exact_in_fp64(rows):
    torch.manual_seed(0)
    qkv = torch.randn(2, 6, 3 * 8, dtype=torch.float64, requires_grad=True)
    out = A._ShortAttention.apply(qkv, 2, rows)
    assert torch.allclose(out, A.merge_heads(A.attend(*A.split_heads(qkv, 2))), atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: A._ShortAttention.apply(z, 2, rows), (qkv,))


def test_vit_s_takes_short_attention_in_bf16_sdpa_in_fp32():
    """At ViT-S's 197 tokens the bf16 path takes short_attention (SMALL_ATTENTION_BF16), fp32 takes SDPA."""
    x = torch.randn(1, 197, 8)
    assert not A._takes_short(x, 197)
    with torch.autocast("cpu", BF16):
        assert A._takes_short(x, 197) == L.bf16_fast_path(x)


@pytest.mark.parametrize("variant", ["plain", "layer_scale", "drop_path"])
def test_block_keeps_a_bf16_residual_stream_and_matches_fp32(variant, bf16_paths, calls):
    torch.manual_seed(0)
    blk = Block(64, 4, mlp_ratio=2.0, layer_scale=0.5 if variant == "layer_scale" else None,
                drop_path=0.2 if variant == "drop_path" else 0.0).train()
    x = torch.randn(3, 17, 64, requires_grad=True)
    g = torch.randn(3, 17, 64)
    params = [x, *blk.parameters()]
    torch.manual_seed(1)
    ref = blk(x)
    ref_grads = torch.autograd.grad(ref, params, g)
    calls["linear_add"].clear()
    torch.manual_seed(1)                                   # the same drop-path mask
    with torch.autocast("cpu", BF16):
        y = blk(x)
    grads = torch.autograd.grad(y, params, g.to(BF16))
    assert y.dtype == BF16
    assert len(calls["linear_add"]) == (2 if variant == "plain" else 0)  # proj and fc2 add the residual
    _close(y, ref)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.float32 and _cos(got, want) > 0.99


def _step(model, x, y, amp):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", BF16, enabled=amp):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name,n", [("vit_nano_patch4_28", 50), ("vit_nano_patch2_8", 17)])
def test_a_vit_training_step_in_bf16_runs_every_fast_path_and_matches_fp32(name, n, bf16_paths, calls):
    torch.manual_seed(0)
    model = vitkit.create_model(name)
    x, y = torch.randn(8, *model.input_size), torch.randint(0, model.num_classes, (8,))
    loss32, g32 = _step(model, x, y, False)
    for seen in calls.values():
        seen.clear()
    loss16, g16 = _step(model, x, y, True)
    depth = len(model.blocks)
    assert calls["linear"].count(BF16) >= 2 * depth            # qkv and fc1 of every block: oneDNN bf16 GEMMs
    assert calls["linear_add"] == [BF16] * 2 * (depth - 1)      # proj and fc2 + residual (the last block: class token)
    assert calls["attention"] == [BF16] * (depth - 1)           # short_attention in bf16 (the last block: one query)
    assert abs(loss16 - loss32) <= 2e-2 * abs(loss32)
    for k, g in g32.items():
        assert g16[k].dtype == torch.float32
        assert _cos(g16[k], g) > 0.98 or g.abs().max() < 1e-6, k


@pytest.mark.parametrize("name,kw", [("vit_nano_patch4_28", {}), ("deit_nano_distilled_patch4_28", {}),
                                     ("vit_nano_patch4_28", {"pos_embed": "rel"}),
                                     ("vit_nano_patch4_28", {"layer_scale": 0.1, "drop_path_rate": 0.0})])
def test_class_token_forward_computes_the_last_block_for_that_token_only(name, kw):
    """model(x) = forward_head(forward_features(x)), in eval and in training (gradients too), while its last
    block runs its MLP on the class (and distillation) token only; off with the fast paths."""
    torch.manual_seed(0)
    model = vitkit.create_model(name, **kw)
    x, y = torch.randn(4, *model.input_size), torch.randint(0, 10, (4,))
    rows = []
    model.blocks[-1].mlp.register_forward_hook(lambda m, a, out: rows.append(a[0].shape[1]))
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        ref = model.forward_head(feats)
        rows.clear()
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
        assert rows == [model.num_prefix_tokens - model.cfg.reg_tokens]   # class (+ distillation) token
        with fast_linear(False):
            rows.clear()
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
            assert rows == [feats.shape[1]]                               # every token
    if model.head_dist is not None:
        model.set_distilled_training(False)
    model.train()

    def grads(fn):
        model.zero_grad()
        F.cross_entropy(fn(x), y).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    fast, full = grads(model), grads(lambda t: model.forward_head(model.forward_features(t)))
    assert fast.keys() == full.keys()
    for k in full:
        torch.testing.assert_close(fast[k], full[k], rtol=1e-4, atol=1e-6)


def test_attention_forward_first_equals_the_full_rows():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(2, 11, 32)
    bias = torch.randn(4, 11, 11)
    with torch.no_grad():
        torch.testing.assert_close(attn.forward_first(x, 2, bias), attn(x, attn_bias=bias)[:, :2], rtol=1e-5, atol=1e-6)


def test_mlp_and_attention_take_the_residual_where_dropout_is_off():
    torch.manual_seed(0)
    mlp, attn = Mlp(16, 32, drop=0.5), Attention(16, 2, proj_drop=0.5)
    x, r = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    for m in (mlp, attn):
        m.eval()
        torch.testing.assert_close(m(x, residual=r), r + m(x), rtol=1e-6, atol=1e-6)
        m.train()                                    # dropout between: the add stays outside the GEMM
        torch.manual_seed(3)
        a = m(x, residual=r)
        torch.manual_seed(3)
        torch.testing.assert_close(a, r + m(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_weights_packed_per_call_for_many_rows_compute_the_same(dtype, bf16_paths, monkeypatch):
    """From PACK_ROWS rows on a call reorders the weight into oneDNN's blocked layout first: same outputs and
    gradients as the plain weight (fp32: to float rounding)."""
    torch.manual_seed(0)
    m = Linear(64, 96)
    x, r = torch.randn(4, 30, 64, requires_grad=True), torch.randn(4, 30, 96)
    g = torch.randn(4, 30, 96).to(dtype)
    ctx = (lambda: torch.autocast("cpu", BF16)) if dtype == BF16 else (lambda: torch.autocast("cpu", enabled=False))

    def run(residual):
        with ctx():
            y = m(x, residual=residual)
        return (y, *torch.autograd.grad(y, [x, *m.parameters()], g))
    outs = {}
    for rows in (10 ** 9, 0):                                  # plain weight; packed on every call
        monkeypatch.setattr(L, "PACK_ROWS", rows)
        for residual in (None, r):
            outs[rows, residual is None] = run(residual)
            with torch.no_grad(), ctx():
                outs[rows, residual is None, "infer"] = (m(x, residual=residual),)
    for key in [k for k in outs if k[0] == 0]:
        for got, want in zip(outs[key], outs[(10 ** 9, *key[1:])]):
            torch.testing.assert_close(got, want, rtol=1e-5 if dtype == torch.float32 else 1e-2,
                                       atol=1e-5 if dtype == torch.float32 else 1e-2)
