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
              for n in ("t2t_vit_7", "t2t_vit_14")}
    assert abs(counts["t2t_vit_7"] - 4.3e6) < 0.05e6 and abs(counts["t2t_vit_14"] - 21.5e6) < 0.05e6  # paper Table 1
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
