"""ConViT's gated positional self-attention, and the ConViT model built on it."""
import time

import pytest
import torch

from vitkit import create_model
from vitkit.layers import Attention
from vitkit.layers.gpsa import GPSA, relative_offsets
from vitkit.train import TrainConfig, fit
from vitkit.train.run import build_run


def test_relative_offsets():
    r = relative_offsets((2, 3))                  # raster order: patch 1 is (y=0, x=1), patch 5 is (1, 2)
    assert r.shape == (6, 6, 3)
    assert r[1, 5].tolist() == [1.0, 1.0, 2.0] and r[5, 1].tolist() == [-1.0, -1.0, 2.0]
    assert (r[torch.arange(6), torch.arange(6)] == 0).all()


def test_gate_fully_positional_attends_by_position_only():
    torch.manual_seed(0)
    gpsa = GPSA(32, 4, (4, 4), qkv_bias=True)
    with torch.no_grad():
        gpsa.gating_param.fill_(1e4)              # sigma = 1: all positional
        gpsa.pos_proj.weight.normal_()            # any positional logits, not only the local init
    a1 = gpsa(torch.randn(2, 16, 32), return_attention=True)[1]
    a2 = gpsa(10 * torch.randn(3, 16, 32), return_attention=True)[1]
    pos = gpsa.positional_attention()
    assert torch.allclose(a1, pos.expand_as(a1), atol=1e-6) and torch.allclose(a2, pos.expand_as(a2), atol=1e-6)
    assert torch.allclose(a1.sum(-1), torch.ones(2, 4, 16))


def test_gate_fully_on_content_is_plain_attention():
    torch.manual_seed(0)
    gpsa = GPSA(32, 4, (4, 4), qkv_bias=True)
    attn = Attention(32, 4, qkv_bias=True)
    attn.load_state_dict({k: v for k, v in gpsa.state_dict().items() if k.startswith(("qkv.", "proj."))})
    with torch.no_grad():
        gpsa.gating_param.fill_(-1e4)
        x = torch.randn(2, 16, 32)
        out, a = gpsa(x, return_attention=True)
        want, wa = attn(x, return_attention=True)
    assert torch.allclose(out, want, atol=1e-5) and torch.allclose(a, wa, atol=1e-6)


def test_mixed_gate_is_the_normalised_convex_combination():
    torch.manual_seed(0)
    gpsa = GPSA(16, 2, (3, 3))
    with torch.no_grad():
        gpsa.gating_param.copy_(torch.tensor([0.3, -1.2]))
        x = torch.randn(1, 9, 16)
        a = gpsa(x, return_attention=True)[1]
        q, k, _ = gpsa.qkv(x).reshape(1, 9, 3, 2, 8).permute(2, 0, 3, 1, 4)
        content = (q @ k.transpose(-2, -1) / 8 ** 0.5).softmax(-1)
        g = torch.sigmoid(gpsa.gating_param).view(1, 2, 1, 1)
        assert torch.allclose(a, (1 - g) * content + g * gpsa.positional_attention(), atol=1e-6)


def test_locality_init_puts_each_head_at_its_own_offset():
    gpsa = GPSA(36, 9, (5, 5), locality_strength=4.0)
    pos = gpsa.positional_attention()                    # (9, 25, 25)
    centre = 2 * 5 + 2                                   # patch (y=2, x=2)
    for h1 in range(3):
        for h2 in range(3):
            j = pos[h1 + 3 * h2, centre].argmax().item()   # head (h1, h2) looks at offset (h1-1, h2-1) in (x, y)
            assert (j % 5 - 2, j // 5 - 2) == (h1 - 1, h2 - 1)
    assert torch.equal(gpsa.qkv.weight[72:], torch.eye(36))  # values start as the identity
    with pytest.raises(ValueError, match="patch tokens"):
        gpsa(torch.randn(1, 26, 36))


def test_convit_gpsa_first_then_class_token_and_sa():
    m = create_model("convit_nano_patch4_28")
    assert [type(b.attn).__name__ for b in m.blocks] == ["GPSA", "GPSA", "Attention", "Attention"]
    inter = m.forward_intermediates(torch.randn(2, 1, 28, 28), return_attention=True)
    assert [h.shape[1] for h in inter["hidden_states"]] == [49, 49, 50, 50, 50]  # the class token joins at block 2
    assert [a.shape[-1] for a in inter["attentions"]] == [49, 49, 50, 50]
    m(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(b.attn.gating_param.grad is not None for b in m.blocks[:2])
    assert {"cls_token", "pos_embed.weight", "blocks.0.attn.gating_param"} <= m.no_weight_decay()
    counts = {n: sum(p.numel() for p in create_model(n, device="meta").parameters())
              for n in ("convit_tiny", "convit_small", "convit_base")}
    assert counts == {"convit_tiny": 5_710_512, "convit_small": 27_777_322, "convit_base": 86_540_040}  # timm's


@pytest.mark.slow
def test_convit_learns_digits(tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(model="convit_nano_patch2_8", data="digits", epochs=8, batch_size=32, lr=2e-3,
                      warmup_epochs=1, out=str(tmp_path / "run"), num_threads=1, log_every=1000,
                      model_args={"depth": 3})
    model, task, loaders, bundle, meta = build_run(cfg)
    t0 = time.time()
    result = fit(model, task, loaders, cfg, meta)
    assert result["test_acc"] > 0.80, result
    assert time.time() - t0 < 60
