import pytest
import torch

from vitkit.layers import Attention, Block, DropPath


@pytest.mark.parametrize("with_bias", [False, True])
def test_sdpa_path_equals_explicit_path(with_bias, sdpa_path):
    attn = Attention(64, num_heads=4).eval()
    x = torch.randn(3, 17, 64)
    bias = torch.randn(4, 17, 17) if with_bias else None
    from torch.profiler import profile
    with profile() as prof:
        fast = attn(x, attn_bias=bias)
    assert any("scaled_dot_product" in e.key for e in prof.key_averages())  # the SDPA path really ran
    ref, probs = attn(x, attn_bias=bias, return_attention=True)
    assert torch.allclose(fast, ref, atol=1e-5)
    assert probs.shape == (3, 4, 17, 17)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 4, 17), atol=1e-5)


def test_attention_matches_hand_written_formula():
    torch.manual_seed(1)
    attn = Attention(8, num_heads=2).eval()
    x = torch.randn(1, 5, 8)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    outs = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        a = torch.softmax(q[0, :, s] @ k[0, :, s].T / 2.0, dim=-1)   # sqrt(4) = 2
        outs.append(a @ v[0, :, s])
    expected = attn.proj(torch.cat(outs, dim=-1))[None]
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_block_is_pre_ln_residual():
    blk = Block(32, 4, mlp_ratio=2.0).eval()
    x = torch.randn(2, 6, 32)
    h = x + blk.attn(blk.norm1(x))
    expected = h + blk.mlp(blk.norm2(h))
    assert torch.allclose(blk(x), expected, atol=1e-6)
    out, probs = blk(x, return_attention=True)
    assert torch.allclose(out, expected, atol=1e-5) and probs.shape == (2, 4, 6, 6)


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    dp = DropPath(0.5).train()
    x = torch.ones(4000, 3, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)  # all or nothing
    assert abs(y.mean().item() - 1.0) < 0.05
    assert torch.equal(dp.eval()(x), x)
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_attend_takes_a_bool_mask_on_both_paths_as_sdpa_does():
    import torch.nn.functional as F

    from vitkit.layers import attend
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    mask = torch.rand(6, 6) > 0.3
    mask |= torch.eye(6, dtype=torch.bool)                              # every query sees something
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    explicit, probs = attend(q, k, v, mask, return_attention=True)
    assert torch.allclose(attend(q, k, v, mask), ref, atol=1e-6) and torch.allclose(explicit, ref, atol=1e-6)
    assert (probs[..., ~mask] == 0).all()                               # True = may attend


def test_short_attention_matches_the_explicit_path_with_its_gradients():
    """The fused short path (one autograd node, written-out backward) against the split-heads path."""
    from vitkit.layers.attention import _ShortAttention, attend, merge_heads, short_attention, split_heads
    torch.manual_seed(0)
    B, N, nh, hd = 3, 7, 2, 4
    qkv = torch.randn(B, N, 3 * nh * hd, dtype=torch.float64, requires_grad=True)

    def reference(z):
        return merge_heads(attend(*split_heads(z, nh)))

    g = torch.randn(B, nh * hd, N, dtype=torch.float64).transpose(1, 2)   # a non-contiguous gradient
    out = short_attention(qkv, nh)
    (grad,) = torch.autograd.grad(out, qkv, g)
    ref = reference(qkv)
    (ref_grad,) = torch.autograd.grad(ref, qkv, g)
    assert torch.allclose(out, ref, atol=1e-12) and torch.allclose(grad, ref_grad, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(short_attention(qkv, nh), ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: _ShortAttention.apply(z, nh), (qkv,))


@pytest.mark.parametrize("case", ["plain", "bias", "attn_drop", "long"])
def test_attention_takes_the_short_path_only_where_it_applies(case, monkeypatch):
    import vitkit.layers.attention as A
    calls = []
    monkeypatch.setattr(A, "short_attention", lambda qkv, nh: calls.append(1) or A._ShortAttention.apply(qkv, nh))
    attn = Attention(16, num_heads=2, attn_drop=0.5 if case == "attn_drop" else 0.0).train()
    n = 200 if case == "long" else 9                                    # 200^2 > SMALL_ATTENTION
    x = torch.randn(2, n, 16, requires_grad=True)
    bias = torch.zeros(2, n, n) if case == "bias" else None
    attn(x, attn_bias=bias).sum().backward()
    assert len(calls) == (case == "plain")
    if case == "plain":  # and training through it equals training through the split-heads path
        grads = [p.grad.clone() for p in attn.parameters()] + [x.grad.clone()]
        attn.zero_grad(), x.grad.zero_()
        monkeypatch.setattr(A, "SMALL_ATTENTION", 0)                  # not short: SDPA
        attn(x).sum().backward()
        for a, b in zip(grads, [p.grad for p in attn.parameters()] + [x.grad]):
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("native", [False, True])
def test_short_attention_under_cpu_autocast_runs_in_one_dtype_forward_and_backward(native, monkeypatch):
    """Under CPU bf16 autocast short_attention runs in bf16 where the CPU has native bf16 (vitkit's bf16 fast
    path) and in fp32 elsewhere (bf16 matmuls are slow without a bf16 unit); forward and backward alike,
    the backward also when called under autocast."""
    import vitkit.layers.linear as L
    from vitkit.layers.attention import attend, merge_heads, short_attention, split_heads
    monkeypatch.setattr(L, "native_bf16", lambda: native)
    want = torch.bfloat16 if native else torch.float32
    tol = 3e-2 if native else 1e-6
    qkv = torch.randn(2, 5, 3 * 8, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = short_attention(qkv, 2)
    out.float().sum().backward()
    q, k, v = split_heads(qkv.detach(), 2)
    assert out.dtype == want and qkv.grad is not None and qkv.grad.dtype == torch.float32
    assert torch.allclose(out.float(), merge_heads(attend(q, k, v)), atol=tol)
    grad, qkv.grad = qkv.grad, None
    with torch.autocast("cpu", torch.bfloat16):                         # backward called under autocast too
        short_attention(qkv, 2).float().sum().backward()
    assert torch.allclose(qkv.grad, grad, atol=1e-6)
    ref = qkv.detach().requires_grad_(True)                               # the gradient itself: fp32 reference
    merge_heads(attend(*split_heads(ref, 2))).sum().backward()
    assert torch.allclose(grad, ref.grad, atol=tol)
    attn = Attention(16, num_heads=2)                                   # and through the layer (bf16 Linears)
    x = torch.randn(2, 5, 16, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        y = attn(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad is not None and attn.qkv.weight.grad is not None


def test_fast_paths_off_allow_a_double_backward():
    """short_attention and the oneDNN Linear are once differentiable; fast_linear(False) gives the
    reference ops, through which a gradient penalty (grad of a grad) works."""
    from vitkit.layers import fast_linear
    attn = Attention(16, num_heads=2)
    x = torch.randn(2, 9, 16, requires_grad=True)
    with fast_linear(False):
        (g,) = torch.autograd.grad(attn(x).pow(2).sum(), x, create_graph=True)
        g.pow(2).sum().backward()
    assert attn.qkv.weight.grad is not None and attn.qkv.weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="differentiate twice|once_differentiable"):
        (g,) = torch.autograd.grad(attn(x).pow(2).sum(), x, create_graph=True)
        g.pow(2).sum().backward()
