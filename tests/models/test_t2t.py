"""T2T-ViT's registered names say which T2T layers the model has: vitkit's are transformer layers, the
official code's ``t2t_vit_t_*``; the official ``t2t_vit_7`` / ``t2t_vit_14`` are Performer models."""
import pytest
import torch

from vitkit import create_model
from vitkit.models import is_model, list_models


def test_names_are_the_official_transformer_t2t_names():
    assert list_models("t2t_vit_*") == ["t2t_vit_nano_28", "t2t_vit_nano_8", "t2t_vit_t_14", "t2t_vit_t_19",
                                        "t2t_vit_t_24", "t2t_vit_t_7"]
    assert not is_model("t2t_vit_7") and not is_model("t2t_vit_14")     # Performer T2T layers in the official code
    assert create_model("t2t_vit_t_14", device="meta").cfg.name == "t2t_vit_t_14"


@pytest.mark.parametrize("name,millions", [("t2t_vit_t_14", 21.5), ("t2t_vit_t_19", 39.0), ("t2t_vit_t_24", 64.1)])
def test_sizes_match_the_official_readme(name, millions):
    """The official README's #params (its fixed 1D position table, 197 x D, counted or not: within 0.15M)."""
    m = create_model(name, device="meta")
    count = sum(p.numel() for p in m.parameters())
    assert abs(count - millions * 1e6) < 0.15e6, count
    assert m.grid_size == (14, 14) and m.cfg.token_dim == 64
    assert m(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)
