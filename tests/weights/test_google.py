"""Google's Flax ViT .npz: a file written here from known tensors lands in the right places."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitkit.models.vit import ViTConfig, VisionTransformer
from vitkit.weights import get_format, load_weights

D, H, HD, P, C, DEPTH, MLP, REP, K, IMG = 8, 2, 4, 4, 3, 2, 16, 6, 5, 8  # 2x2 grid + class token
N = (IMG // P) ** 2


def _paper_npz(rng: np.random.Generator, prefix: str = "") -> dict[str, np.ndarray]:
    """The paper's layout (vit_jax/models_vit.py), as its checkpoints name and shape the params."""
    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.3

    w = {"embedding/kernel": r(P, P, C, D), "embedding/bias": r(D), "cls": r(1, 1, D),
         "Transformer/posembed_input/pos_embedding": r(1, 1 + N, D),
         "Transformer/encoder_norm/scale": 1 + r(D), "Transformer/encoder_norm/bias": r(D),
         "pre_logits/kernel": r(D, REP), "pre_logits/bias": r(REP), "head/kernel": r(REP, K), "head/bias": r(K)}
    for i in range(DEPTH):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{b}{ln}/scale"], w[f"{b}{ln}/bias"] = 1 + r(D), r(D)
        for n in ("query", "key", "value"):
            w[f"{b}MultiHeadDotProductAttention_1/{n}/kernel"] = r(D, H, HD)
            w[f"{b}MultiHeadDotProductAttention_1/{n}/bias"] = r(H, HD)
        w[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = r(H, HD, D)
        w[f"{b}MultiHeadDotProductAttention_1/out/bias"] = r(D)
        w[f"{b}MlpBlock_3/Dense_0/kernel"], w[f"{b}MlpBlock_3/Dense_0/bias"] = r(D, MLP), r(MLP)
        w[f"{b}MlpBlock_3/Dense_1/kernel"], w[f"{b}MlpBlock_3/Dense_1/bias"] = r(MLP, D), r(D)
    return {prefix + k: v for k, v in w.items()}


def _model(**kw) -> VisionTransformer:
    cfg = dict(img_size=IMG, patch_size=P, in_chans=C, embed_dim=D, depth=DEPTH, num_heads=H, mlp_ratio=MLP / D,
               num_classes=K, pre_logits=True, pre_logits_dim=REP)
    return VisionTransformer(ViTConfig(**{**cfg, **kw})).eval()


def _flax_reference(w: dict[str, np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """The paper's forward pass written directly on the Flax-layout arrays (einsum over named axes)."""
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    ln = lambda z, n: F.layer_norm(z, (D,), t[f"{n}/scale"], t[f"{n}/bias"], eps=1e-6)  # noqa: E731
    img = x.permute(0, 2, 3, 1)                                                      # NHWC
    patches = img.unfold(1, P, P).unfold(2, P, P)                                    # (B, gh, gw, C, P, P)
    z = torch.einsum("bhwcyx,yxcd->bhwd", patches, t["embedding/kernel"]) + t["embedding/bias"]
    z = torch.cat([t["cls"].expand(x.shape[0], -1, -1), z.flatten(1, 2)], dim=1)
    z = z + t["Transformer/posembed_input/pos_embedding"]
    for i in range(DEPTH):
        b, a = f"Transformer/encoderblock_{i}/", f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/"
        y = ln(z, b + "LayerNorm_0")
        q, k, v = (torch.einsum("bnd,dhk->bnhk", y, t[f"{a}{n}/kernel"]) + t[f"{a}{n}/bias"]
                   for n in ("query", "key", "value"))
        att = torch.einsum("bqhk,bshk->bhqs", q, k).div(HD ** 0.5).softmax(-1)
        o = torch.einsum("bhqs,bshk->bqhk", att, v)
        z = z + torch.einsum("bqhk,hkd->bqd", o, t[a + "out/kernel"]) + t[a + "out/bias"]
        y = ln(z, b + "LayerNorm_2")
        y = F.gelu(y @ t[b + "MlpBlock_3/Dense_0/kernel"] + t[b + "MlpBlock_3/Dense_0/bias"])
        z = z + y @ t[b + "MlpBlock_3/Dense_1/kernel"] + t[b + "MlpBlock_3/Dense_1/bias"]
    pooled = ln(z, "Transformer/encoder_norm")[:, 0]
    pooled = torch.tanh(pooled @ t["pre_logits/kernel"] + t["pre_logits/bias"])
    return pooled @ t["head/kernel"] + t["head/bias"]


@pytest.mark.parametrize("prefix", ["", "opt/target/"])
def test_paper_npz_lands_in_the_right_places(tmp_path, prefix):
    w = _paper_npz(np.random.default_rng(0), prefix)
    np.savez(tmp_path / "vit.npz", **w)
    w = {k[len(prefix):]: v for k, v in w.items()}
    model = _model()
    report = load_weights(model, tmp_path / "vit.npz")
    assert report.format.startswith("Google")
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    blk = "Transformer/encoderblock_1/"
    att = blk + "MultiHeadDotProductAttention_1/"
    # conv kernel HWIO -> OIHW: weight[d, c, y, x] = kernel[y, x, c, d]
    assert np.array_equal(sd["patch_embed.proj.weight"], w["embedding/kernel"].transpose(3, 2, 0, 1))
    assert sd["patch_embed.proj.weight"][5, 2, 1, 3] == w["embedding/kernel"][1, 3, 2, 5]
    # q, k, v fused in that order; a head's rows contiguous: qkv[s*D + h*HD + j, i] = kernel_s[i, h, j]
    for s, n in enumerate(("query", "key", "value")):
        kern, bias = w[f"{att}{n}/kernel"], w[f"{att}{n}/bias"]
        for (i, h, j) in [(0, 0, 0), (7, 1, 3), (3, 1, 0)]:
            assert sd["blocks.1.attn.qkv.weight"][s * D + h * HD + j, i] == kern[i, h, j]
            assert sd["blocks.1.attn.qkv.bias"][s * D + h * HD + j] == bias[h, j]
    # out kernel (heads, hd, D) -> proj.weight[o, h*HD + j]
    assert sd["blocks.1.attn.proj.weight"][6, 1 * HD + 2] == w[att + "out/kernel"][1, 2, 6]
    # Dense kernels (in, out) -> Linear (out, in)
    assert np.array_equal(sd["blocks.1.mlp.fc1.weight"], w[blk + "MlpBlock_3/Dense_0/kernel"].T)
    assert np.array_equal(sd["blocks.1.mlp.fc2.weight"], w[blk + "MlpBlock_3/Dense_1/kernel"].T)
    assert np.array_equal(sd["blocks.1.norm2.weight"], w[blk + "LayerNorm_2/scale"])
    assert np.array_equal(sd["head.weight"], w["head/kernel"].T)
    assert np.array_equal(sd["pre_logits.0.weight"], w["pre_logits/kernel"].T)
    # position table: (1, 1 + N, D), class token first, patches in raster order; unchanged
    assert np.array_equal(sd["pos_embed.weight"], w["Transformer/posembed_input/pos_embedding"])
    assert np.array_equal(sd["cls_token"], w["cls"])
    # and the whole function: vitkit == the paper's forward written on the raw arrays
    x = torch.randn(2, C, IMG, IMG)
    with torch.no_grad():
        assert (model(x) - _flax_reference(w, x)).abs().max() < 1e-5


def test_google_layout_round_trips_through_the_engine():
    model = _model()
    google = get_format("google")
    out, rest = google.from_vitkit(model.state_dict(), {"num_heads": H})
    assert not rest
    assert out["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"].shape == (D, H, HD)
    back, unmapped, _, _ = google.to_vitkit(out)
    assert not unmapped and all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="number of heads"):
        google.from_vitkit(model.state_dict())


def test_big_vision_scanned_layout(tmp_path):
    """big_vision: params/ prefix, modules numbered 0/0/1/0, blocks stacked by nn.scan, and a
    patches-only position table (its class token gets no position: a zero row here)."""
    w = _paper_npz(np.random.default_rng(1))
    bv = {}
    for k, v in w.items():
        k = (k.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
              .replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0"))
        bv[k] = v
    bv["pos_embedding"] = bv.pop("Transformer/posembed_input/pos_embedding")[:, 1:]
    stacked = {}
    for k in [k for k in bv if k.startswith("Transformer/encoderblock_0/")]:
        rest = k[len("Transformer/encoderblock_0/"):]
        stacked["Transformer/encoderblock/" + rest] = np.stack([bv.pop(f"Transformer/encoderblock_{i}/{rest}")
                                                                for i in range(DEPTH)])
    np.savez(tmp_path / "bv.npz", **{"params/" + k: v for k, v in {**bv, **stacked}.items()})
    model = _model()
    load_weights(model, tmp_path / "bv.npz")
    assert torch.equal(model.pos_embed.weight[0, 0], torch.zeros(D))
    assert torch.equal(model.pos_embed.weight[:, 1:], torch.from_numpy(bv["pos_embedding"]))
    q = stacked["Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel"][1]
    assert torch.equal(model.blocks[1].attn.qkv.weight[:D], torch.from_numpy(q.reshape(D, D).T))


def test_npz_converts_without_naming_the_model(tmp_path):
    """Flax kernels keep the heads apart, so an .npz alone gives the whole config."""
    from vitkit.weights import convert, from_checkpoint
    np.savez(tmp_path / "vit.npz", **_paper_npz(np.random.default_rng(2)))
    convert(tmp_path / "vit.npz", tmp_path / "timm", to="timm")
    model = from_checkpoint(tmp_path / "timm")
    assert (model.cfg.num_heads, model.cfg.embed_dim, model.cfg.patch_size, model.cfg.num_classes) == (H, D, P, K)
    direct = _model()
    load_weights(direct, tmp_path / "vit.npz")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in direct.state_dict().items())
