"""Window attention identities (Swin): partition/merge, shift/reverse, the SW-MSA mask against a
brute-force region labelling, one window = global attention, SW-MSA = masked global attention."""
import itertools

import pytest
import torch

from vitkit.layers import (Attention, Block, WindowAttention, cyclic_shift, effective_window,
                           pad_to_multiple, reverse_shift, shift_regions, shift_window_mask,
                           window_merge, window_partition)


def _randomise(attn: WindowAttention) -> WindowAttention:
    """A random (non-zero) relative bias table, so the bias actually matters in a comparison."""
    with torch.no_grad():
        attn.rel_pos.table.normal_()
    return attn.eval()


@pytest.mark.parametrize("H,W,M", [(8, 8, 4), (7, 10, 3), (5, 5, 7)])
def test_partition_then_merge_is_identity_with_padding_cropped(H, W, M):
    x = torch.randn(2, H, W, 3)
    xp = pad_to_multiple(x, M)
    Hp, Wp = xp.shape[1:3]
    assert Hp % M == 0 and Wp % M == 0 and Hp - H < M and Wp - W < M
    assert torch.equal(xp[:, :H, :W], x) and not xp[:, H:].any() and not xp[:, :, W:].any()
    windows = window_partition(xp, M)
    assert windows.shape == (2, (Hp // M) * (Wp // M), M * M, 3)
    assert torch.equal(window_merge(windows, M, (Hp, Wp))[:, :H, :W], x)


def test_partition_layout_is_raster_windows_of_raster_tokens():
    M, H, W = 2, 4, 6
    idx = torch.arange(H * W).view(1, H, W, 1)
    windows = window_partition(idx, M)[0, :, :, 0]                      # (nW, M*M)
    for w, (wi, wj) in enumerate(itertools.product(range(H // M), range(W // M))):
        expected = [(wi * M + a) * W + (wj * M + b) for a in range(M) for b in range(M)]
        assert windows[w].tolist() == expected


@pytest.mark.parametrize("s", [0, 1, 3])
def test_shift_then_reverse_shift_is_identity(s):
    x = torch.randn(2, 6, 9, 4)
    y = cyclic_shift(x, s)
    assert torch.equal(reverse_shift(y, s), x)
    for i, j in [(0, 0), (5, 8), (2, 7)]:  # position (i, j) holds the token from (i+s, j+s) mod (H, W)
        assert torch.equal(y[:, i, j], x[:, (i + s) % 6, (j + s) % 9])


def _brute_force_allowed(Hp: int, Wp: int, M: int, s: int) -> torch.Tensor:
    """(nW, N, N): label every position of the rolled map by where its token came from; two tokens of
    one window may attend iff they were neighbours before the roll (no wrap between them)."""
    nW, N = (Hp // M) * (Wp // M), M * M
    allowed = torch.zeros(nW, N, N, dtype=torch.bool)
    for w, (wi, wj) in enumerate(itertools.product(range(Hp // M), range(Wp // M))):
        pos = [(wi * M + a, wj * M + b) for a in range(M) for b in range(M)]
        orig = [((i + s) % Hp, (j + s) % Wp) for i, j in pos]           # before the roll
        for p, q in itertools.product(range(N), repeat=2):
            allowed[w, p, q] = abs(orig[p][0] - orig[q][0]) < M and abs(orig[p][1] - orig[q][1]) < M
    return allowed


@pytest.mark.parametrize("H,W,M", [(8, 8, 4), (12, 8, 4), (9, 9, 3), (5, 7, 4)])
def test_shift_mask_allows_exactly_the_same_region_pairs(H, W, M):
    Mw, s = effective_window((H, W), M, M // 2)
    Hp, Wp = H + (-H % Mw), W + (-W % Mw)
    mask = shift_window_mask((Hp, Wp), Mw, s)
    assert torch.equal(mask, _brute_force_allowed(Hp, Wp, Mw, s))
    # the 9-region labelling: only the last row and last column of windows mix regions
    regions = shift_regions((Hp, Wp), Mw, s)
    assert regions.unique().numel() == 9 and mask[0].all()


def test_sw_msa_attention_is_zero_exactly_on_blocked_pairs():
    attn = _randomise(WindowAttention(16, 2, window_size=4, shift_size=2))
    x = torch.randn(2, 8, 8, 16)
    _, probs = attn(x, return_attention=True)                            # (B, nW, heads, N, N)
    allowed = _brute_force_allowed(8, 8, 4, 2)[None, :, None].expand_as(probs)
    assert torch.all(probs[~allowed] == 0) and torch.all(probs[allowed] > 0)


@pytest.mark.parametrize("size,M", [(4, 4), (5, 7)])
def test_one_window_covering_the_map_equals_global_attention(size, M):
    """A map no larger than the window is one window: W-MSA = Attention over all tokens with the
    same relative bias (a map smaller than M uses the table's central offsets)."""
    attn = _randomise(WindowAttention(16, 2, window_size=M, shift_size=M // 2))
    glob = Attention(16, 2).eval()
    glob.load_state_dict({k: v for k, v in attn.state_dict().items() if not k.startswith("rel_pos.")})
    x = torch.randn(3, size, size, 16)
    bias = attn.rel_pos((size, size))                                    # (heads, N, N)
    expected = glob(x.reshape(3, size * size, 16), attn_bias=bias).view(3, size, size, 16)
    assert torch.allclose(attn(x), expected, atol=1e-5)
    out, probs = attn(x, return_attention=True)
    assert probs.shape == (3, 1, 2, size * size, size * size) and torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("H,W,M,shift", [(8, 8, 4, 2), (6, 9, 3, 1), (10, 7, 4, 2), (8, 8, 4, 0)])
def test_window_attention_equals_masked_global_attention(H, W, M, shift):
    """W-MSA / SW-MSA equals global attention over the padded map whose bias is the relative bias
    for pairs that share a (shifted) window and were neighbours before the roll, -inf elsewhere."""
    attn = _randomise(WindowAttention(16, 2, window_size=M, shift_size=shift))
    glob = Attention(16, 2).eval()
    glob.load_state_dict({k: v for k, v in attn.state_dict().items() if not k.startswith("rel_pos.")})
    x = torch.randn(2, H, W, 16)
    xp = pad_to_multiple(x, M)
    Hp, Wp = xp.shape[1:3]
    ii, jj = torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()
    wid = ((ii - shift) % Hp) // M * (Wp // M) + ((jj - shift) % Wp) // M   # window after the roll
    di, dj = ii[:, None] - ii[None, :], jj[:, None] - jj[None, :]
    ok = (wid[:, None] == wid[None, :]) & (di.abs() < M) & (dj.abs() < M)
    rel = attn.rel_pos.table[((di + M - 1).clamp(0, 2 * M - 2) * (2 * M - 1) + (dj + M - 1).clamp(0, 2 * M - 2))]
    bias = rel.permute(2, 0, 1).masked_fill(~ok, float("-inf"))          # (heads, Hp*Wp, Hp*Wp)
    expected = glob(xp.reshape(2, Hp * Wp, 16), attn_bias=bias).view(2, Hp, Wp, 16)[:, :H, :W]
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_attention_takes_leading_batch_dims_with_a_per_group_bias(sdpa_path):
    """The generalisation WindowAttention relies on: x (B, G, N, D) with a bias (G, heads, N, N)."""
    attn = Attention(16, 4).eval()
    x, bias = torch.randn(2, 3, 5, 16), torch.randn(3, 4, 5, 5)
    out, probs = attn(x, attn_bias=bias, return_attention=True)
    for g in range(3):
        ref, ref_probs = attn(x[:, g], attn_bias=bias[g], return_attention=True)
        assert torch.allclose(out[:, g], ref, atol=1e-6) and torch.allclose(probs[:, g], ref_probs, atol=1e-6)
    assert torch.allclose(attn(x, attn_bias=bias), out, atol=1e-5)    # SDPA path


def test_block_runs_window_attention_on_maps_and_every_param_gets_a_gradient():
    blk = Block(16, 2, mlp_ratio=2.0, attn=WindowAttention(16, 2, window_size=3, shift_size=1))
    x = torch.randn(2, 7, 5, 16, requires_grad=True)
    y = blk(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.parameters())
    assert x.grad.abs().sum() > 0


def test_shift_must_be_smaller_than_the_window():
    with pytest.raises(ValueError, match="shift_size"):
        WindowAttention(16, 2, window_size=4, shift_size=4)
