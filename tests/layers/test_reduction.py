"""PVT spatial-reduction attention: R = 1 is global attention; R > 1 attends to the reduced map."""
import torch

from vitkit.layers import Attention, Block
from vitkit.layers.reduction import SpatialReductionAttention


def test_without_reduction_it_is_global_attention():
    sra = SpatialReductionAttention(16, 4, sr_ratio=1).eval()
    assert not hasattr(sra, "sr") and not hasattr(sra, "norm")           # PVT: no conv, no norm at R = 1
    glob = Attention(16, 4).eval()
    glob.load_state_dict({"qkv.weight": torch.cat([sra.q.weight, sra.kv.weight]),
                          "qkv.bias": torch.cat([sra.q.bias, sra.kv.bias]),
                          "proj.weight": sra.proj.weight, "proj.bias": sra.proj.bias})
    x = torch.randn(2, 5, 6, 16)
    assert torch.allclose(sra(x), glob(x.reshape(2, 30, 16)).view(2, 5, 6, 16), atol=1e-5)


def test_with_reduction_queries_attend_to_the_reduced_map():
    """Brute force: each R x R patch -> one key/value token (the conv as a sum over the patch, then
    LayerNorm); softmax(q k^T / sqrt(d)) v with every pixel's query."""
    R, H, W = 2, 4, 7                                                     # W = 7: the last column is dropped
    sra = SpatialReductionAttention(8, 2, sr_ratio=R).eval()
    x = torch.randn(1, H, W, 8)
    w, b = sra.sr.weight, sra.sr.bias                                     # (C, C, R, R)
    tokens = torch.stack([torch.einsum("oikl,kli->o", w, x[0, pi * R:(pi + 1) * R, pj * R:(pj + 1) * R]) + b
                          for pi in range(H // R) for pj in range(W // R)])
    tokens = sra.norm(tokens)                                             # (M, C), M = 2 * 3
    q = sra.q(x[0]).reshape(H * W, 2, 4).transpose(0, 1)                  # (nh, N, d)
    k, v = sra.kv(tokens).reshape(6, 2, 2, 4).permute(1, 2, 0, 3)          # each (nh, M, d)
    attn = (q @ k.transpose(-2, -1) / 2.0).softmax(-1)                    # sqrt(4) = 2
    expected = sra.proj((attn @ v).transpose(0, 1).reshape(H, W, 8))
    assert torch.allclose(sra(x)[0], expected, atol=1e-5)
    out, probs = sra(x, return_attention=True)
    assert probs.shape == (1, 2, H * W, 6) and torch.allclose(probs[0], attn, atol=1e-6)
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_in_a_block_every_parameter_gets_a_gradient():
    blk = Block(16, 2, attn=SpatialReductionAttention(16, 2, sr_ratio=2))
    blk(torch.randn(2, 6, 6, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.parameters())
