"""The pictures of a finished classification run, for every family `vitkit train` can train: each draws
what applies to it and nothing fails (LocalViT, ConViT and the Visual Transformer ended `vitkit train`
with an internal error: their attention maps or position tables do not fit a ViT's)."""
import pytest
import torch

from vitkit import create_model
from vitkit.viz.report import classification_pictures


@pytest.mark.parametrize("name, size, rollout", [
    ("vit_nano_patch2_8", 8, True), ("deit_nano_distilled_patch2_8", 8, True), ("convit_nano_patch2_8", 8, False),
    ("vt_resnet_nano_8", 8, False), ("local_vit_nano_28", 28, False), ("ceit_nano_8", 8, True),
])
def test_classification_pictures_draw_what_applies(name, size, rollout, tmp_path):
    model = create_model(name, num_classes=3, in_chans=1).eval()
    images = torch.randn(4, 1, size, size)
    logits, labels = torch.randn(12, 3), torch.randint(0, 3, (12,))
    paths = classification_pictures(tmp_path, model, logits, labels, images, ["a", "b", "c"], (0.5,), (0.25,))
    assert "confusion" in paths and all(p.is_file() for p in paths.values())
    assert ("rollout" in paths) == rollout, sorted(paths)
