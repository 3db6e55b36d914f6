"""Window activation pruning helpers (kept counts, window scores, top-k selection, gather/scatter) and sparse
window attention (equal-size token subsets per window) against WindowAttention and a brute-force reference."""
import math

import pytest
import torch

from vitkit.layers import WindowAttention, cyclic_shift, shift_window_bias, window_partition
from vitkit.layers.sparse import (SparseWindowAttention, activation_magnitude, gather_windows, kept_windows,
                                  scatter_windows, select_windows, window_scores)


@pytest.mark.parametrize("nW,s,k", [(16, 0.0, 16), (16, 0.5, 8), (10, 0.3, 7), (16, 0.3, 12), (16, 0.8, 4),
                                    (4, 0.7, 2), (1, 0.8, 1), (7, 0.1, 7)])
def test_kept_windows_is_ceil(nW, s, k):
    assert kept_windows(nW, s) == k


def test_kept_windows_rejects_out_of_range():
    for s in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            kept_windows(4, s)


def test_window_score_is_the_l2_norm_of_the_tokens_mean_abs_activation():
    """Sec. 3.1 / the official backbone: a_t = mean_c |x_tc| per token, score_w = ||(a_t) over w||_2,
    computed here element by element."""
    torch.manual_seed(0)
    w = torch.randn(2, 5, 6, 3)                                  # (B, nW, N, C)
    ref = torch.tensor([[math.sqrt(sum((sum(abs(float(v)) for v in w[b, j, t]) / 3) ** 2 for t in range(6)))
                         for j in range(5)] for b in range(2)])
    assert torch.allclose(window_scores(w), ref, atol=1e-6)
    # scoring the magnitude map (one channel) gives the same scores: a stage computes it once
    x = torch.randn(2, 8, 8, 16)
    assert activation_magnitude(x).shape == (2, 8, 8, 1)
    assert torch.allclose(window_scores(window_partition(activation_magnitude(x), 4)),
                          window_scores(window_partition(x, 4)), atol=1e-6)


def test_window_score_ranks_by_mean_magnitude_not_by_the_l2_norm_over_channels():
    """Window 0 has one large channel, window 1 two moderate ones: the L2 norm over tokens and channels
    (2.0 > 1.70) ranks window 0 first, the per-token mean |x| (1.0 < 1.2) window 1."""
    w = torch.zeros(1, 2, 2, 2)
    w[0, 0, 0] = torch.tensor([2.0, 0.0])
    w[0, 1, 0] = torch.tensor([1.2, 1.2])
    assert torch.allclose(window_scores(w), torch.tensor([[1.0, 1.2]]))
    assert select_windows(window_scores(w), 1).tolist() == [[1]]


def test_selection_takes_the_largest_in_window_order():
    scores = torch.tensor([[1.0, 5.0, 2.0, 4.0, 3.0], [9.0, 1.0, 8.0, 2.0, 7.0]])
    assert select_windows(scores, 3).tolist() == [[1, 3, 4], [0, 2, 4]]        # top 3, ascending
    assert select_windows(scores, 5).tolist() == [list(range(5))] * 2


def test_gather_scatter_updates_only_the_kept_windows():
    w = torch.randn(2, 6, 4, 3, requires_grad=True)
    idx = torch.tensor([[0, 4], [1, 5]])
    kept = gather_windows(w, idx)
    assert torch.equal(kept[1, 1], w[1, 5])
    out = scatter_windows(w, idx, kept * 2)
    for b, ks in enumerate(idx.tolist()):
        for j in range(6):
            assert torch.equal(out[b, j], w[b, j] * (2 if j in ks else 1))
    out.sum().backward()
    assert w.grad[0, 0].eq(2).all() and w.grad[0, 1].eq(1).all()


# ---------------------------------------------------------------- sparse window attention (token subsets)


@pytest.mark.parametrize("shift,hw", [(0, (8, 8)), (2, (8, 8)), (2, (7, 10))])
def test_sparse_window_attention_keeping_everything_is_window_attention(shift, hw):
    torch.manual_seed(0)
    dense = WindowAttention(16, 2, window_size=4, shift_size=shift)
    torch.nn.init.normal_(dense.rel_pos.table)
    sparse = SparseWindowAttention(16, 2, window_size=4, shift_size=shift, keep_ratio=1.0)
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(2, *hw, 16)
    assert torch.allclose(sparse(x), dense(x), atol=1e-6)


@pytest.mark.parametrize("shift", [0, 2])
def test_sparse_window_attention_equals_attention_among_each_windows_top_tokens(shift):
    torch.manual_seed(1)
    m = SparseWindowAttention(8, 2, window_size=4, shift_size=shift, keep_ratio=0.4)   # 16 tokens -> 7
    torch.nn.init.normal_(m.rel_pos.table)
    x = torch.randn(2, 8, 8, 8)
    out = m(x)
    xs = window_partition(cyclic_shift(x, shift), 4)                                  # (2, 4, 16, 8)
    os_ = window_partition(cyclic_shift(out, shift), 4)
    bias = m.rel_pos((4, 4)) + (shift_window_bias((8, 8), 4, shift)[:, 0, None] if shift else 0)
    bias = bias.expand(4, 2, 16, 16)                                                  # (nW, heads, N, N)
    for b in range(2):
        for w in range(4):
            keep = xs[b, w].norm(dim=-1).topk(7).indices.sort().values
            t = xs[b, w, keep]                                                        # (7, 8)
            q, k, v = (t @ m.qkv.weight.T + m.qkv.bias).reshape(7, 3, 2, 4).permute(1, 2, 0, 3)
            a = (q @ k.transpose(-2, -1) * 4 ** -0.5 + bias[w][:, keep][:, :, keep]).softmax(-1)
            ref = (a @ v).transpose(0, 1).reshape(7, 8) @ m.proj.weight.T + m.proj.bias
            assert torch.allclose(os_[b, w, keep], ref, atol=1e-5)
            dropped = torch.ones(16, dtype=torch.bool)
            dropped[keep] = False
            assert torch.count_nonzero(os_[b, w, dropped]) == 0                     # equal-size subset: 7 per window


def test_sparse_window_attention_rejects_bad_keep_ratio_and_maps():
    with pytest.raises(ValueError):
        SparseWindowAttention(8, 2, keep_ratio=0.0)
    with pytest.raises(ValueError, match="attention maps"):
        SparseWindowAttention(8, 2, window_size=4)(torch.randn(1, 4, 4, 8), return_attention=True)
