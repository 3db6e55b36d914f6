"""Axial and local-attention ViTs at the model level: the registered 28x28 configs, forward/backward,
intermediates, input checks, and two identities: a local ViT whose neighbourhood covers the map (zero
relative embeddings) is vitkit's GAP ViT with the same weights; an axial ViT without a position table
does not see the order of the patch rows and columns, but does see which patch is in which row.
(The layer identities, local == masked global attention and rows-then-columns reach, are in
tests/layers/test_local.py.)"""
import pytest
import torch

from vitkit.layers import AxialAttention, LocalAttention
from vitkit.models import create_model, list_models
from vitkit.models.local_vit import LocalViT

NAMES = ["axial_vit_nano_28", "local_vit_nano_28"]


def _randomise(m: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Every weight matrix / table drawn at ``std`` (norms and biases kept): at the init's std 0.02
    attention is nearly uniform, so what changes the logits changes them by less than the
    tolerances; the identities hold for any weights."""
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 2:
                p.normal_(0, std)
    return m


def test_registered_configs():
    assert set(NAMES) <= set(list_models("*_vit_nano_28"))
    axial, local = (create_model(n, device="meta") for n in NAMES)
    assert isinstance(axial, LocalViT) and isinstance(local, LocalViT)
    assert [b.attn.axis for b in axial.blocks] == ["row", "col", "row", "col"]
    assert all(isinstance(b.attn, LocalAttention) and b.attn.kernel_size == 3 for b in local.blocks)
    assert all(isinstance(b.attn, AxialAttention) for b in axial.blocks)
    for m in (axial, local):
        assert m.grid_size == (7, 7) and m.input_size == (1, 28, 28) and m.num_features == 64
        assert 0.1e6 < sum(p.numel() for p in m.parameters()) < 0.2e6
    assert axial.pos_embed is not None and local.pos_embed is None  # local: relative embeddings only


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_every_parameter_gets_a_gradient(name):
    m = create_model(name).train()
    logits = m(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("name", NAMES)
def test_features_intermediates_head_and_reset(name):
    m = create_model(name, dynamic_img_size=True).eval()
    x = torch.randn(2, 1, 28, 20)                                      # a 7x5 map: rows and columns differ
    feats = m.forward_features(x)
    assert feats.shape == (2, 7, 5, 64)
    out = m.forward_intermediates(x, return_attention=True)
    assert torch.allclose(out["features"], feats, atol=1e-6) and len(out["hidden_states"]) == 5
    assert torch.allclose(m.norm(out["hidden_states"][-1]), feats, atol=1e-6)
    shapes = [tuple(a.shape) for a in out["attentions"]]
    if name.startswith("axial"):  # rows: 7 rows of 5 tokens; columns: 5 columns of 7 tokens
        assert shapes == [(2, 7, 4, 5, 5), (2, 5, 4, 7, 7)] * 2
    else:  # every one of the 35 tokens over its 3x3 neighbourhood; a corner has 4 neighbours on the map
        assert shapes == [(2, 4, 35, 1, 9)] * 4
        assert (out["attentions"][0][:, :, 0, 0] > 0).sum(-1).eq(4).all()
    for a in out["attentions"]:
        assert torch.allclose(a.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(m.forward_head(feats, pre_logits=True), feats.mean(dim=(1, 2)))
    assert torch.allclose(m.forward_head(feats), m(x), atol=1e-6)
    m.reset_classifier(4)
    assert m(x).shape == (2, 4) and torch.count_nonzero(m(x)) == 0


def test_no_weight_decay_names_the_position_tables():
    axial, local = (create_model(n, device="meta") for n in NAMES)
    assert axial.no_weight_decay() == {"pos_embed.weight"}
    assert local.no_weight_decay() == {f"blocks.{i}.attn.{t}" for i in range(4) for t in ("rel_row", "rel_col")}


def test_input_and_config_checks():
    m = create_model("local_vit_nano_28").eval()
    with pytest.raises(ValueError, match="local_vit_nano_28 expects 1 input channel"):
        m(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        m(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        create_model("axial_vit_nano_28", dynamic_img_size=True)(torch.randn(1, 1, 30, 28))
    assert create_model("axial_vit_nano_28", dynamic_img_size=True)(torch.randn(1, 1, 36, 20)).shape == (1, 10)
    with pytest.raises(ValueError, match="attention must be one of"):
        create_model("local_vit_nano_28", attention="global")
    with pytest.raises(ValueError, match="even for axial"):
        create_model("axial_vit_nano_28", depth=3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        create_model("local_vit_nano_28", kernel_size=4)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        create_model("local_vit_nano_28", num_heads=5)


def test_local_vit_covering_the_map_is_the_gap_vit_with_the_same_weights():
    """k = 13 >= 2 * 7 - 1: every token's neighbourhood holds the whole 7x7 map; with the relative
    embeddings at zero the logits are q.k only, so each block is ViT's global block. ViT's names load
    one to one (only the relative embeddings are missing)."""
    vit = _randomise(create_model("vit_nano_patch4_28", class_token=False, global_pool="avg").eval())
    local = create_model("local_vit_nano_28", kernel_size=13, pos_embed=True).eval()
    result = local.load_state_dict(vit.state_dict(), strict=False)
    with torch.no_grad():
        for name in result.missing_keys:
            local.get_parameter(name).normal_()
    assert result.unexpected_keys == [] and set(result.missing_keys) == local.no_weight_decay() - {"pos_embed.weight"}
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(local(x), vit(x), atol=1e-4)                # the relative embeddings count
    with torch.no_grad():
        for blk in local.blocks:
            blk.attn.rel_row.zero_()
            blk.attn.rel_col.zero_()
    assert torch.allclose(local(x), vit(x), atol=1e-5)
    small = create_model("local_vit_nano_28", kernel_size=3, pos_embed=True).eval()
    small.load_state_dict(local.state_dict() | {n: torch.zeros_like(p) for n, p in small.named_parameters()
                                                 if n.endswith(("rel_row", "rel_col"))})
    assert not torch.allclose(small(x), vit(x), atol=1e-3)                # 3x3 neighbourhoods are not global


def _permute_patches(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, p: int = 4) -> torch.Tensor:
    """Reorder the p x p patches of x (B, C, H, W): patch row i comes from rows[i], column j from cols[j]."""
    B, C, H, W = x.shape
    g = x.reshape(B, C, H // p, p, W // p, p)[:, :, rows][:, :, :, :, cols]
    return g.reshape(B, C, H, W)


def test_axial_vit_without_positions_ignores_row_and_column_order_but_not_which_row():
    """Row attention is permutation-equivariant along a row and independent across rows (columns
    likewise), MLPs act per token and GAP is symmetric: permuting whole patch rows and columns leaves
    the logits unchanged. A general shuffle of the 49 patches moves patches between rows: changed."""
    torch.manual_seed(0)
    m = _randomise(create_model("axial_vit_nano_28", pos_embed=False).eval())
    x = torch.randn(2, 1, 28, 28)
    rows, cols = torch.randperm(7), torch.randperm(7)
    assert torch.allclose(m(_permute_patches(x, rows, cols)), m(x), atol=1e-5)
    shuffled = x.reshape(2, 1, 7, 4, 7, 4).permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 49, 4, 4)[:, :, torch.randperm(49)]
    shuffled = shuffled.reshape(2, 1, 7, 7, 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 28, 28)
    assert not torch.allclose(m(shuffled), m(x), atol=1e-3)
    local = _randomise(create_model("local_vit_nano_28").eval())             # neighbourhoods: order matters
    assert not torch.allclose(local(_permute_patches(x, rows, cols)), local(x), atol=1e-3)
