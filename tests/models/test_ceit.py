"""CeiT: LeFF keeps the class token out of the conv; I2T stem; layer-wise class-token attention."""
import time

import pytest
import torch

from vitkit import create_model
from vitkit.layers.mlp import LeFF
from vitkit.train import TrainConfig, fit
from vitkit.train.run import build_run


def test_leff_keeps_the_class_token_out_of_the_conv():
    torch.manual_seed(0)
    leff = LeFF(16, 32, (3, 4), kernel_size=3).eval()
    x = torch.randn(2, 1 + 12, 16)
    y = leff(x)
    assert y.shape == x.shape and torch.equal(y[:, 0], x[:, 0])       # the class token passes unchanged
    x2 = x.clone()
    x2[:, 0] = 100 * torch.randn(2, 16)                                # whatever the class token holds,
    assert torch.equal(leff(x2)[:, 1:], y[:, 1:])                      # the patch tokens do not see it
    # the patch path by hand: Linear-BN-GELU, back to the 3x4 grid, depthwise 3x3-BN-GELU, Linear-BN-GELU
    with torch.no_grad():
        h = torch.nn.functional.gelu(leff.bn1(leff.fc1(x[:, 1:]).transpose(1, 2)))    # (B, 32, 12)
        h = leff.dwconv(h.reshape(2, 32, 3, 4)).flatten(2)                             # (B, 32, 12)
        want = torch.nn.functional.gelu(leff.bn2(leff.fc2(h.transpose(1, 2)).transpose(1, 2))).transpose(1, 2)
    assert torch.allclose(y[:, 1:], want, atol=1e-6)
    assert leff.dwconv.conv.groups == 32                               # depthwise
    with pytest.raises(ValueError, match="grid"):
        leff(torch.randn(1, 10, 16))


def test_patch_tokens_mix_only_with_grid_neighbours_in_leff():
    torch.manual_seed(0)
    leff = LeFF(8, 8, (5, 5), kernel_size=3).eval()
    x = torch.randn(1, 26, 8)
    x2 = x.clone()
    x2[:, 1 + 12] += 1.0                                                # patch (2, 2)
    changed = (leff(x2) - leff(x)).abs().sum(-1)[0, 1:].view(5, 5) > 0
    want = torch.zeros(5, 5, dtype=torch.bool)
    want[1:4, 1:4] = True                                               # its 3x3 neighbourhood only
    assert torch.equal(changed, want)


def test_ceit_stem_tokens_and_lca():
    m = create_model("ceit_nano_28").eval()
    assert m.grid_size == (7, 7) and all(isinstance(b.mlp, LeFF) for b in m.blocks)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        inter = m.forward_intermediates(x)
        cls = m.class_tokens(inter["hidden_states"])                    # (B, depth, D)
        assert cls.shape == (2, 4, 64)
        want = m.head(m.norm(m.lca(cls)[:, -1]))                        # LCA over every block's class token
        assert torch.allclose(m(x), want, atol=1e-5)
        # the last class token's output depends on the others only through attention: perturbing the
        # first class token changes it (it attends to every layer's class token)
        cls2 = cls.clone()
        cls2[:, 0] += torch.randn(2, 64)
        assert not torch.allclose(m.lca(cls2)[:, -1], m.lca(cls)[:, -1])
    plain = create_model("ceit_nano_28", lca=False)
    assert plain.lca is None and plain(x).shape == (2, 10)
    m.train()
    m(x).sum().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if not n.startswith("head."))
    counts = [sum(p.numel() for p in create_model(f"ceit_{s}_patch16_224", device="meta").parameters())
              for s in ("tiny", "small", "base")]
    for n, paper in zip(counts, (6.4e6, 24.2e6, 94.4e6)):               # CeiT Table 2, within 3%
        assert abs(n - paper) / paper < 0.03, counts


@pytest.mark.slow
def test_ceit_learns_digits(tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(model="ceit_nano_8", data="digits", epochs=4, batch_size=32, lr=2e-3, warmup_epochs=1,
                      out=str(tmp_path / "run"), num_threads=1, log_every=1000, model_args={"depth": 2})
    model, task, loaders, bundle, meta = build_run(cfg)
    t0 = time.time()
    result = fit(model, task, loaders, cfg, meta)
    assert result["test_acc"] > 0.80, result
    assert time.time() - t0 < 60
