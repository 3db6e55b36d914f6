"""T2T-ViT: the soft split is an overlapping unfold, re-structurization inverts the token layout."""
import time

import pytest
import torch
import torch.nn.functional as F

from vitkit import create_model
from vitkit.layers.t2t import SoftSplit, T2TLayer, T2TModule, TokenAttention, restructure
from vitkit.train import TrainConfig, fit
from vitkit.train.run import build_run


def _explicit_soft_split(img, k, s, p):
    """Every k x k window (zero-padded by p, stride s), flattened channel-major, in raster order."""
    x = F.pad(img, (p, p, p, p))
    B, C, H, W = x.shape
    rows = []
    for i in range(0, H - k + 1, s):
        for j in range(0, W - k + 1, s):
            rows.append(x[:, :, i:i + k, j:j + k].reshape(B, C * k * k))
    return torch.stack(rows, dim=1)


@pytest.mark.parametrize("k,s,p,size", [(7, 4, 2, (32, 32)), (3, 2, 1, (9, 12)), (3, 1, 1, (5, 5))])
def test_soft_split_equals_explicit_unfold(k, s, p, size):
    img = torch.randn(2, 3, *size)
    ss = SoftSplit(k, s, p)
    out = ss(img)
    want = _explicit_soft_split(img, k, s, p)
    assert out.shape == want.shape == (2, ss.out_size(*size)[0] * ss.out_size(*size)[1], 3 * k * k)
    assert torch.equal(out, want)
    assert torch.equal(out, F.unfold(img, k, padding=p, stride=s).transpose(1, 2))
    assert ss.out_size(*size) == ((size[0] + 2 * p - k) // s + 1, (size[1] + 2 * p - k) // s + 1)


def test_splits_overlap_and_restructure_inverts_the_layout():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    t = SoftSplit(3, 1, 1)(img)                                     # 16 tokens, 9 pixels each
    assert t[0, 5].view(3, 3).tolist() == [[0, 1, 2], [4, 5, 6], [8, 9, 10]]  # token 5 = pixel (1, 1)'s window
    assert t[0, 6].view(3, 3)[:, :2].tolist() == t[0, 5].view(3, 3)[:, 1:].tolist()  # neighbours share pixels
    tokens = torch.randn(2, 12, 5)
    m = restructure(tokens, (3, 4))
    assert m.shape == (2, 5, 3, 4) and torch.equal(m[:, :, 1, 2], tokens[:, 6])
    assert torch.equal(SoftSplit(1, 1, 0)(m), tokens)               # a 1x1 split undoes it
    with pytest.raises(ValueError, match="grid"):
        restructure(tokens, (3, 3))


def test_token_layer_changes_width_with_a_residual_through_v():
    torch.manual_seed(0)
    layer = T2TLayer(27, 8)
    x = torch.randn(2, 10, 27)
    assert layer(x).shape == (2, 10, 8)
    att = TokenAttention(27, 8)
    with torch.no_grad():
        att.proj.weight.zero_()
        att.proj.bias.zero_()
        assert torch.allclose(att(x), att.qkv(x)[..., 16:])          # proj = 0 leaves the value path


# ---- a port of the official code (yitu-opensource/T2T-ViT, models/token_transformer.py, transformer_block.Mlp,
# models/t2t_vit.py's T2T_module with tokens_type="transformer"); nn.LayerNorm's default eps 1e-5 as there
class _OfficialMlp(torch.nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1, self.act = torch.nn.Linear(in_features, hidden_features), torch.nn.GELU()
        self.fc2 = torch.nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _OfficialAttention(torch.nn.Module):
    def __init__(self, dim, num_heads=1, in_dim=None, qkv_bias=False):
        super().__init__()
        self.num_heads, self.in_dim = num_heads, in_dim
        head_dim = dim // num_heads                      # dim is the INPUT width C * k * k
        self.scale = head_dim ** -0.5
        self.qkv = torch.nn.Linear(dim, in_dim * 3, bias=qkv_bias)
        self.proj = torch.nn.Linear(in_dim, in_dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.in_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = self.proj((attn @ v).transpose(1, 2).reshape(B, N, self.in_dim))
        return v.squeeze(1) + x


class _OfficialTokenTransformer(torch.nn.Module):
    def __init__(self, dim, in_dim, num_heads=1, mlp_ratio=1.0):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attn = _OfficialAttention(dim, num_heads, in_dim)
        self.norm2 = torch.nn.LayerNorm(in_dim)
        self.mlp = _OfficialMlp(in_dim, int(in_dim * mlp_ratio))

    def forward(self, x):
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _OfficialT2TModule(torch.nn.Module):
    def __init__(self, in_chans, embed_dim, token_dim):
        super().__init__()
        self.soft_split0 = torch.nn.Unfold(kernel_size=(7, 7), stride=(4, 4), padding=(2, 2))
        self.soft_split1 = torch.nn.Unfold(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
        self.soft_split2 = torch.nn.Unfold(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
        self.attention1 = _OfficialTokenTransformer(dim=in_chans * 7 * 7, in_dim=token_dim)
        self.attention2 = _OfficialTokenTransformer(dim=token_dim * 3 * 3, in_dim=token_dim)
        self.project = torch.nn.Linear(token_dim * 3 * 3, embed_dim)

    def forward(self, x):
        x = self.soft_split0(x).transpose(1, 2)
        for attention, split in ((self.attention1, self.soft_split1), (self.attention2, self.soft_split2)):
            x = attention(x)
            B, new_hw, C = x.shape
            side = int(new_hw ** 0.5)
            x = split(x.transpose(1, 2).reshape(B, C, side, side)).transpose(1, 2)
        return self.project(x)


def test_token_transformer_equals_the_official_one_with_its_weights():
    """Scores scaled by 1/sqrt(C k^2), the input width (the official head_dim = dim // num_heads, dim the
    input), not 1/sqrt(token_dim): the official weights load and give the same function."""
    torch.manual_seed(0)
    ref = _OfficialTokenTransformer(dim=3 * 3 * 3, in_dim=8).eval()
    ours = T2TLayer(27, 8, norm_eps=1e-5).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 10, 27) * 3
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    _, attn = ours.attn(ours.norm1(x), return_attention=True)
    q, k, _ = ours.attn.qkv(ours.norm1(x)).chunk(3, dim=-1)
    assert torch.allclose(attn, (q @ k.transpose(1, 2) / 27 ** 0.5).softmax(-1), atol=1e-6)


def test_t2t_module_equals_the_official_one_with_its_weights():
    torch.manual_seed(0)
    ref = _OfficialT2TModule(in_chans=3, embed_dim=48, token_dim=16).eval()
    ours = T2TModule((32, 32), 3, 48, token_dim=16, norm_eps=1e-5).eval()
    state = {k.replace("attention1.", "layers.0.").replace("attention2.", "layers.1."): v
             for k, v in ref.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert ours.grids == [(8, 8), (4, 4), (2, 2)]
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_t2t_module_grids_and_model():
    mod = T2TModule((224, 224), 3, 256)
    assert mod.grids == [(56, 56), (28, 28), (14, 14)] and mod.num_patches == 196  # the paper's 224px module
    m = create_model("t2t_vit_nano_28")
    assert m.grid_size == (7, 7)
    inter = m.forward_intermediates(torch.randn(2, 1, 28, 28), return_attention=True)
    assert inter["features"].shape == (2, 50, 64) and inter["attentions"][0].shape == (2, 4, 50, 50)
    m(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if not n.startswith("head."))
    counts = {n: sum(p.numel() for p in create_model(n, device="meta").parameters())
              for n in ("t2t_vit_t_7", "t2t_vit_t_14")}
    # paper Table 1: 4.3M for T2T-ViT-7 (Performer T2T layers, about as many weights), 21.5M for T2T-ViT_t-14
    assert abs(counts["t2t_vit_t_7"] - 4.3e6) < 0.05e6 and abs(counts["t2t_vit_t_14"] - 21.5e6) < 0.05e6
    with pytest.raises(ValueError, match="28x28"):
        m(torch.randn(1, 1, 32, 32))


@pytest.mark.slow
def test_t2t_vit_learns_digits(tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(model="t2t_vit_nano_8", data="digits", epochs=8, batch_size=32, lr=2e-3, warmup_epochs=1,
                      out=str(tmp_path / "run"), num_threads=1, log_every=1000, model_args={"depth": 2})
    model, task, loaders, bundle, meta = build_run(cfg)
    t0 = time.time()
    result = fit(model, task, loaders, cfg, meta)
    assert result["test_acc"] > 0.80, result
    assert time.time() - t0 < 60
