"""ReLU linear attention equals its quadratic form; multi-scale aggregation is what it says."""
import pytest
import torch

from vitkit.layers.linear_attention import (MultiScaleLinearAttention, relu_linear_attention,
                                            relu_quadratic_attention)


@pytest.mark.parametrize("shape", [(2, 3, 17, 8), (1, 64, 4), (2, 2, 2, 50, 16)])
def test_linear_form_equals_quadratic_form(shape):
    q, k, v = torch.randn(shape), torch.randn(shape), torch.randn(*shape[:-1], 5)
    lin = relu_linear_attention(q, k, v)
    quad, a = relu_quadratic_attention(q, k, v, return_attention=True)
    assert lin.shape == quad.shape == (*shape[:-1], 5)
    assert torch.allclose(lin, quad, atol=1e-5, rtol=1e-5)
    live = (q.clamp(min=0) @ k.clamp(min=0).transpose(-2, -1)).sum(-1) > 0  # a query all <= 0 sees nothing
    assert torch.allclose(a.sum(-1), live.float(), atol=1e-5) and (a >= 0).all()


def test_quadratic_form_matches_the_formula_written_out():
    q, k, v = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 2)
    rq, rk, eps = q.clamp(min=0), k.clamp(min=0), 1e-15  # eps: a query that sees nothing gives 0, not 0/0
    expected = torch.stack([sum((rq[i] @ rk[j]) * v[j] for j in range(6)) / (sum(rq[i] @ rk[j] for j in range(6)) + eps)
                            for i in range(6)])
    assert torch.allclose(relu_quadratic_attention(q, k, v), expected, atol=1e-6)
    assert torch.allclose(relu_linear_attention(q, k, v), expected, atol=1e-5)


def test_linear_form_is_linear_in_tokens():
    """65,536 tokens: the N x N matrix would be 16 GiB; the O(N) form needs a few MiB."""
    n = 1 << 16
    q, k, v = torch.randn(1, 1, n, 8), torch.randn(1, 1, n, 8), torch.randn(1, 1, n, 8)
    out = relu_linear_attention(q, k, v)
    assert out.shape == (1, 1, n, 8) and torch.isfinite(out).all()


def test_low_precision_inputs_are_summed_in_float32():
    q, k, v = (torch.randn(2, 100, 8) for _ in range(3))
    out = relu_linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), relu_linear_attention(q, k, v), atol=5e-2)


def test_module_linear_path_equals_quadratic_path_and_maps_are_per_scale_and_head():
    m = MultiScaleLinearAttention(32, head_dim=8, scales=(3, 5)).eval()
    x = torch.randn(2, 32, 6, 7)
    fast = m(x)
    ref, attn = m(x, return_attention=True)
    assert fast.shape == (2, 32, 6, 7) and m.heads == 4
    assert attn.shape == (2, 3 * 4, 42, 42)                              # (1 + 2 scales) x 4 heads
    assert torch.allclose(fast, ref, atol=1e-5)


def test_module_equals_hand_assembled_multi_scale_attention():
    m = MultiScaleLinearAttention(16, out_channels=24, head_dim=4, scales=(3,)).eval()
    x = torch.randn(1, 16, 5, 5)
    qkv = m.qkv(x)
    outs = []
    for t in (qkv, m.aggreg[0](qkv)):                                    # scale 1, then the 3x3 scale
        for h in range(m.heads):
            c = t[0, 12 * h:12 * (h + 1)].flatten(1).T                   # (N, 3d): [q | k | v] of head h
            outs.append(relu_quadratic_attention(c[:, :4], c[:, 4:8], c[:, 8:]).T)  # (d, N)
    expected = m.proj(torch.cat(outs).view(1, -1, 5, 5))
    assert torch.allclose(m(x), expected, atol=1e-5)


def test_aggregation_mixes_neighbours_only_within_one_q_k_or_v_of_one_head():
    m = MultiScaleLinearAttention(16, head_dim=4, scales=(3,))
    qkv = torch.randn(1, 48, 7, 7, requires_grad=True)
    m.aggreg[0](qkv)[0, 5, 3, 3].backward()                              # channel 5: k of head 0
    touched = qkv.grad[0].abs().sum((1, 2)).nonzero().flatten().tolist()
    assert touched == [4, 5, 6, 7]                                       # the 4 k channels of head 0
    assert qkv.grad[0, 4].nonzero().tolist() == [[i, j] for i in (2, 3, 4) for j in (2, 3, 4)]


def test_every_parameter_gets_a_gradient():
    m = MultiScaleLinearAttention(16, head_dim=4).train()
    m(torch.randn(2, 16, 6, 6)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
