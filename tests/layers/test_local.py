"""Axial and stand-alone local attention against global attention (exact identities)."""
import pytest
import torch

from vitkit.layers import Attention
from vitkit.layers.local import AxialAttention, LocalAttention, axial_blocks


def _global_twin(layer: Attention) -> Attention:
    glob = Attention(layer.qkv.in_features, layer.num_heads).eval()
    glob.load_state_dict({k: v for k, v in layer.state_dict().items() if k.split(".")[0] in ("qkv", "proj")})
    return glob


def test_axial_attention_over_a_1xW_map_equals_global_attention_over_that_row():
    row = AxialAttention(16, 4, axis="row").eval()
    x = torch.randn(2, 1, 9, 16)
    bias = torch.randn(4, 9, 9)
    expected, probs = _global_twin(row)(x[:, 0], attn_bias=bias, return_attention=True)
    assert torch.allclose(row(x, attn_bias=bias)[:, 0], expected, atol=1e-5)
    out, attn = row(x, attn_bias=bias, return_attention=True)
    assert torch.allclose(out[:, 0], expected, atol=1e-5) and torch.allclose(attn[:, 0], probs, atol=1e-6)


@pytest.mark.parametrize("axis", ["row", "col"])
def test_each_row_or_column_attends_on_its_own(axis):
    layer = AxialAttention(16, 2, axis=axis).eval()
    glob = _global_twin(layer)
    x = torch.randn(2, 5, 7, 16)
    out = layer(x)
    lines = range(5) if axis == "row" else range(7)
    for i in lines:
        line = x[:, i] if axis == "row" else x[:, :, i]
        got = out[:, i] if axis == "row" else out[:, :, i]
        assert torch.allclose(got, glob(line), atol=1e-5)


def test_rows_then_columns_reach_the_whole_map():
    torch.manual_seed(0)
    row_only = AxialAttention(8, 2, axis="row")
    pair = axial_blocks(8, 2, mlp_ratio=1.0)
    for net, expected_reach in ((row_only, 7), (pair, 5 * 7)):
        x = torch.randn(1, 5, 7, 8, requires_grad=True)
        net(x)[0, 2, 3].sum().backward()
        reach = (x.grad[0].abs().sum(-1) > 0).sum().item()
        assert reach == expected_reach                                   # one row vs every pixel


@pytest.mark.parametrize("H,W,k", [(4, 5, 3), (5, 5, 5), (3, 6, 13)])
def test_local_attention_equals_masked_global_attention_with_relative_logits(H, W, k):
    """Brute force: every pixel against every pixel, logits q.(k + r_offset)/sqrt(d), blocked where
    the offset leaves the k x k window. k >= 2 * side - 1 (the last case) covers the whole map."""
    layer = LocalAttention(16, 2, kernel_size=k).eval()
    with torch.no_grad():
        layer.rel_row.normal_()
        layer.rel_col.normal_()
    x = torch.randn(2, H, W, 16)
    q, kk, v = layer.qkv(x).reshape(2, H * W, 3, 2, 8).permute(2, 0, 3, 1, 4)  # (B, nh, N, d)
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()
    di, dj = ii[None, :] - ii[:, None], jj[None, :] - jj[:, None]       # offset of key b from query a
    r = k // 2
    inside = (di.abs() <= r) & (dj.abs() <= r)
    rel = torch.cat([layer.rel_row[(di + r).clamp(0, k - 1)], layer.rel_col[(dj + r).clamp(0, k - 1)]], -1)  # (N, N, d)
    logits = (q @ kk.transpose(-2, -1) + torch.einsum("bhnd,nmd->bhnm", q, rel)) / 8 ** 0.5
    attn = logits.masked_fill(~inside, float("-inf")).softmax(-1)
    expected = layer.proj((attn @ v).transpose(1, 2).reshape(2, H, W, 16))
    assert torch.allclose(layer(x), expected, atol=1e-5)
    out, probs = layer(x, return_attention=True)
    assert probs.shape == (2, 2, H * W, 1, k * k) and torch.allclose(out, expected, atol=1e-5)
    if k >= 2 * max(H, W) - 1:
        assert inside.all()                                               # global attention, relative logits


def test_local_attention_in_a_block_trains():
    from vitkit.layers import Block
    blk = Block(16, 2, attn=LocalAttention(16, 2, kernel_size=3))
    x = torch.randn(2, 4, 6, 16)
    blk(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.parameters())


def test_argument_checks():
    with pytest.raises(ValueError, match="axis"):
        AxialAttention(8, 2, axis="diag")
    with pytest.raises(ValueError, match="odd"):
        LocalAttention(8, 2, kernel_size=4)
