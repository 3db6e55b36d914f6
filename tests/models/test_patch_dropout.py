"""PatchDropout (Liu et al. 2022): in training the encoder sees a random subset of the positioned patch tokens."""
import pytest
import torch

from vitkit.models import create_model
from vitkit.models.vit import ViTConfig


def _model(**kw):
    torch.manual_seed(0)
    return create_model("vit_mnist_patch7_28", patch_drop=0.25, **kw)


def test_training_keeps_a_random_subset_of_the_positioned_patch_tokens():
    m = _model(class_token=True, global_pool="token").train()
    x = torch.randn(3, 1, 28, 28)
    full = m.pos_embed(m._embed(x)[0], (4, 4))                       # (3, 1 + 16, D), positioned
    kept = m._patch_dropout(full)
    assert kept.shape == (3, 1 + 12, 128)                            # round(0.75 * 16) patches + the class token
    assert torch.equal(kept[:, 0], full[:, 0])                       # the class token always stays
    for b in range(3):                                               # each kept row is one of the image's own rows
        rows = [int((full[b, 1:] == r).all(-1).nonzero()) for r in kept[b, 1:]]
        assert len(set(rows)) == 12
    draws = {tuple(sorted(int((full[0, 1:] == r).all(-1).nonzero()) for r in m._patch_dropout(full)[0, 1:]))
             for _ in range(8)}
    assert len(draws) > 1                                            # a fresh draw per step


def test_the_encoder_on_the_kept_tokens_is_the_model_output():
    # the training forward is the eval encoder run on the kept tokens: same weights, same draw
    m = _model().train()
    x = torch.randn(2, 1, 28, 28)
    torch.manual_seed(1)
    out = m.forward_features(x)
    torch.manual_seed(1)
    tokens = m._patch_dropout(m.pos_embed(m._embed(x)[0], (4, 4)))
    for blk in m.blocks:
        tokens = blk(tokens)
    torch.testing.assert_close(out, m.norm(tokens))
    assert out.shape == (2, 12, 128)


def test_eval_sees_every_token_and_patch_drop_zero_changes_nothing():
    x = torch.randn(2, 1, 28, 28)
    m = _model().eval()
    torch.manual_seed(0)
    plain = create_model("vit_mnist_patch7_28").eval()
    assert m.forward_features(x).shape == (2, 16, 128)
    torch.testing.assert_close(m(x), plain(x), rtol=0, atol=0)       # same init (seed 0), no dropping in eval


@pytest.mark.parametrize("kw, message", [({"patch_drop": 1.0}, "in \\[0, 1\\)"), ({"patch_drop": -0.1}, "in \\[0, 1\\)"),
                                         ({"patch_drop": 0.5, "pos_embed_where": "every"}, "every token's place"),
                                         ({"patch_drop": 0.5, "pos_embed": "rel"}, "every token's place")])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        ViTConfig(**kw)
