"""MAE (He et al. 2021): masking, the visible-only encoder, the masked-only loss, and learning on real digits.
The parity with HF's ViTMAEForPreTraining is in tests/weights/test_mae_hf.py."""
import dataclasses

import pytest
import torch

from vitkit import create_model
from vitkit.models.vit import ViTConfig, VisionTransformer
from vitkit.tasks.mae import (MAE, LinearProbe, MAEPretrain, backbone_state_dict, classifier_from_mae, num_keep,
                              patchify, random_masking, unpatchify)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_vit(**kw) -> VisionTransformer:
    """16x16 RGB, P=4 (16 patches), D=32: MAE's encoder (sin-cos table, class token, no head)."""
    cfg = dict(img_size=16, patch_size=4, in_chans=3, num_classes=0, embed_dim=32, depth=2, num_heads=4,
               mlp_ratio=2.0, pos_embed="sincos")
    return VisionTransformer(ViTConfig(**{**cfg, **kw}))


def tiny_mae(**kw) -> MAE:
    vit_kw = {k: kw.pop(k) for k in list(kw) if k in ("class_token", "global_pool", "pos_embed", "distilled")}
    return MAE(tiny_vit(**vit_kw), **{"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, **kw})


# ---- the keep count --------------------------------------------------------------------------------
@pytest.mark.parametrize("n,r,by_round,by_floor", [
    (16, 0.75, 4, 4), (49, 0.75, 12, 12), (196, 0.75, 49, 49), (64, 0.5, 32, 32),
    (16, 0.15, 14, 13),   # 13.6: the rules differ
    (10, 0.9, 1, 0),      # 0.9999999999999998: truncation loses the one token
    (7, 0.5, 4, 3),       # 3.5: Python's round goes to the even 4
    (49, 0.5, 24, 24),    # 24.5: ... and here to the even 24
    (16, 0.0, 16, 16),
])
def test_num_keep_rules(n, r, by_round, by_floor):
    assert num_keep(n, r) == by_round == round((1 - r) * n)     # the documented default
    assert num_keep(n, r, "floor") == by_floor == int(n * (1 - r))  # MAE's and HF's formula
    with pytest.raises(ValueError, match="keep rule"):
        num_keep(n, r, "ceil")


@pytest.mark.parametrize("n,r", [(16, 0.75), (49, 0.75), (16, 0.15), (10, 0.9), (7, 0.5), (196, 0.6)])
def test_masking_keeps_exactly_round_1_minus_r_times_n_per_sample(n, r):
    x = torch.randn(5, n, 3)
    x_masked, mask, ids_restore = random_masking(x, r)
    keep = round((1 - r) * n)
    assert x_masked.shape == (5, keep, 3)
    assert (mask == 0).sum(1).tolist() == [keep] * 5
    assert (mask == 1).sum(1).tolist() == [n - keep] * 5
    _, mask_floor, _ = random_masking(x, r, rule="floor")
    assert (mask_floor == 0).sum(1).tolist() == [int(n * (1 - r))] * 5


def test_mask_and_ids_restore_are_consistent():
    B, N, r = 4, 20, 0.6
    x = torch.arange(N, dtype=torch.float32).repeat(B, 1)[..., None]   # token i carries the value i
    noise = torch.rand(B, N)
    x_masked, mask, ids_restore = random_masking(x, r, noise)
    keep = num_keep(N, r)
    kept = x_masked[..., 0].long()                                       # (B, keep) original indices
    # the kept tokens are the `keep` smallest-noise ones, in order of increasing noise
    assert torch.equal(kept, noise.topk(keep, dim=1, largest=False).indices)
    # mask is in the original order: 0 exactly at the kept indices
    expect = torch.ones(B, N)
    expect.scatter_(1, kept, 0.0)
    assert torch.equal(mask, expect)
    # unshuffle: [kept; removed] gathered with ids_restore is the original sequence
    ids_shuffle = noise.argsort(dim=1)
    shuffled = torch.gather(x, 1, ids_shuffle[..., None])
    assert torch.equal(shuffled[:, :keep], x_masked)
    assert torch.equal(torch.gather(shuffled, 1, ids_restore[..., None]), x)
    with pytest.raises(ValueError, match="noise must be"):
        random_masking(x, r, torch.rand(B, N + 1))


# ---- patches ----------------------------------------------------------------------------------------
def test_patchify_is_maes_einsum_and_unpatchify_inverts_it():
    imgs = torch.randn(2, 3, 12, 8)
    p = 4
    # MAE's models_mae.patchify: einsum('nchpwq->nhwpqc')
    ref = torch.einsum("nchpwq->nhwpqc", imgs.reshape(2, 3, 3, p, 2, p)).reshape(2, 6, p * p * 3)
    out = patchify(imgs, (p, p))
    assert torch.equal(out, ref)
    assert torch.equal(out[0, 1, :3], imgs[0, :, 0, 4])       # patch (0, 1), first pixel, 3 channels
    assert torch.equal(unpatchify(out, (p, p), (3, 2)), imgs)
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.randn(1, 3, 10, 8), (p, p))


# ---- the encoder -------------------------------------------------------------------------------------
@pytest.mark.parametrize("vit_kw", [{}, dict(pos_embed="learn"), dict(class_token=False, global_pool="avg"),
                                    dict(distilled=True), dict(pos_embed="none"), dict(norm_pre=True)])
def test_encoder_without_masking_is_the_backbone(vit_kw):
    """With r = 0 and noise that sorts to the identity, forward_encoder is the ViT's forward_features."""
    if "norm_pre" in vit_kw and "norm_pre" not in {f.name for f in dataclasses.fields(ViTConfig)}:
        pytest.skip("this ViTConfig has no norm_pre field")
    vit = tiny_vit(**vit_kw).eval()
    mae = MAE(vit, decoder_dim=16, decoder_depth=1, decoder_heads=2, mask_ratio=0.0).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        latent, mask, ids_restore = mae.forward_encoder(x, torch.arange(16.0).repeat(2, 1))
        ref = vit.forward_features(x)
    assert torch.allclose(latent, ref, atol=1e-6)
    assert mask.sum() == 0 and torch.equal(ids_restore, torch.arange(16).repeat(2, 1))


def test_encoder_sees_only_visible_patches():
    mae = tiny_mae().eval()
    x = torch.randn(2, 3, 16, 16)
    noise = torch.rand(2, 16)
    with torch.no_grad():
        latent, mask, _ = mae.forward_encoder(x, noise)
        assert latent.shape == (2, 1 + 4, 32)                   # class token + 4 visible of 16

        def changed(where):                                      # x with the patches `where` (B, N) replaced
            p = mae.patchify(x)
            p[where] = torch.randn_like(p[where]) * 5
            return mae.unpatchify(p)

        same, _, _ = mae.forward_encoder(changed(mask.bool()), noise)       # repaint every masked patch
        moved, _, _ = mae.forward_encoder(changed(~mask.bool()), noise)     # repaint the visible ones
    assert torch.equal(same, latent)
    assert (moved - latent).abs().max() > 1e-2


# ---- the loss ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_is_mse_on_masked_patches_only(norm_pix_loss):
    mae = tiny_mae(norm_pix_loss=norm_pix_loss)
    x = torch.randn(3, 3, 16, 16)
    pred = torch.randn(3, 16, 48)
    mask = (torch.rand(3, 16) < 0.5).float()
    mask[:, 0] = 1.0
    # by hand: target per patch, then the mean over masked (b, n) of the mean squared error
    total, count = 0.0, 0
    for b in range(3):
        for n in range(16):
            if mask[b, n]:
                i, j = divmod(n, 4)
                t = x[b, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4].permute(1, 2, 0).reshape(-1)   # (row, col, channel)
                if norm_pix_loss:
                    t = (t - t.mean()) / (t.var(unbiased=True) + 1e-6).sqrt()
                total += ((pred[b, n] - t) ** 2).mean().item()
                count += 1
    loss = mae.forward_loss(x, pred, mask)
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    # visible patches do not count: any prediction there leaves the loss unchanged
    pred2 = pred.clone()
    pred2[mask == 0] += 100.0
    assert mae.forward_loss(x, pred2, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    pred2[mask == 1] += 1.0
    assert mae.forward_loss(x, pred2, mask).item() > loss.item() + 0.5
    per_sample = mae.forward_loss(x, pred, mask, reduction="none")
    assert per_sample.shape == (3,)


def test_forward_shapes_and_backward_reaches_encoder_and_decoder():
    mae = tiny_mae()
    x = torch.randn(2, 3, 16, 16)
    loss, pred, mask = mae(x)
    assert pred.shape == (2, 16, 4 * 4 * 3) and mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [12.0, 12.0]
    loss.backward()
    for name, p in mae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert "decoder_pos_embed.weight" not in mae.state_dict()     # fixed table, not a weight
    assert {"mask_token", "backbone.cls_token"} <= mae.no_weight_decay()


def test_refuses_backbones_it_cannot_mask():
    with pytest.raises(ValueError, match="relative position bias"):
        MAE(tiny_vit(pos_embed="rel"))
    with pytest.raises(ValueError, match="hybrid"):
        MAE(create_model("vit_hybrid_nano_28", num_classes=0))
    with pytest.raises(ValueError, match="num_classes=0"):
        MAE(tiny_vit(num_classes=10))
    with pytest.raises(ValueError, match="pos_embed_where"):
        MAE(tiny_vit(pos_embed="learn", pos_embed_where="every"))
    with pytest.raises(ValueError, match="VisionTransformer"):
        MAE(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_mae(mask_ratio=1.0)
    with pytest.raises(ValueError, match="at least one masked patch"):
        tiny_mae(mask_ratio=0.0)(torch.randn(1, 3, 16, 16))


# ---- the task --------------------------------------------------------------------------------------------
def test_task_loss_and_deterministic_eval():
    mae = tiny_mae()
    task = MAEPretrain(eval_seed=3)
    batch = (torch.randn(5, 3, 16, 16), torch.zeros(5, dtype=torch.long))
    loss, metrics = task.loss(mae.train(), batch)
    assert loss.requires_grad and metrics["loss"] == loss.detach()
    mae.eval()
    a, b = task.eval_metrics(mae, batch), task.eval_metrics(mae, batch)
    assert a["count"] == 5 and a["loss_sum"] == b["loss_sum"]
    noise = mae.make_noise(batch[0], torch.Generator().manual_seed(3))
    with torch.no_grad():
        mean_loss = mae(batch[0], noise)[0]
    assert a["loss_sum"].item() == pytest.approx(5 * mean_loss.item(), rel=1e-5)  # equal masked counts
    assert MAEPretrain(eval_seed=4).eval_metrics(mae, batch)["loss_sum"] != a["loss_sum"]
    assert task.main_metric == ("loss", "min")


def test_mae_learns_real_digits():
    """A tiny MAE on 64 real MNIST digits (P=7, 16 patches, 12 masked): with a held mask, the loss falls
    by more than half and below the best guess that ignores the visible patches (the mean digit's patch)."""
    from vitkit.data import build
    data = build("mnist5k")
    x = (torch.stack([data.train[i][0] for i in range(64)]) - data.mean[0]) / data.std[0]
    torch.manual_seed(0)
    vit = create_model("vit_mnist_patch7_28", num_classes=0, embed_dim=32, depth=2, num_heads=2,
                       pos_embed="sincos")
    mae = MAE(vit, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    task = MAEPretrain()
    noise = mae.make_noise(x, torch.Generator().manual_seed(task.eval_seed))  # the eval mask
    with torch.no_grad():
        mask = mae(x, noise)[2]
    mean_digit = mae.forward_loss(x, mae.target(x).mean(0, keepdim=True).expand(64, -1, -1), mask)
    before = task.eval_metrics(mae.eval(), (x, None))["loss_sum"] / 64
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3, weight_decay=0.0)
    mae.train()
    for _ in range(300):  # ~2 s on one thread
        loss, _ = task.loss(mae, (x, None))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.eval_metrics(mae.eval(), (x, None))["loss_sum"] / 64
    assert after < 0.5 * before and after < mean_digit, (before, after, mean_digit)  # measured 1.515 -> 0.631 < 0.675


# ---- after pre-training --------------------------------------------------------------------------------------
def test_classifier_and_linear_probe_from_mae():
    mae = tiny_mae()
    state = backbone_state_dict(mae.state_dict())
    assert state.keys() == mae.backbone.state_dict().keys()
    assert all(torch.equal(v, mae.backbone.state_dict()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match="backbone"):
        backbone_state_dict({"head.weight": torch.zeros(1)})

    clf = classifier_from_mae(mae, 7).eval()
    assert clf.head.weight.abs().sum() == 0                            # a zero head, the paper's fine-tuning head
    assert all(torch.equal(clf.state_dict()[k], v) for k, v in state.items())
    assert clf(torch.randn(2, 3, 16, 16)).shape == (2, 7)

    probe = LinearProbe(classifier_from_mae(mae, 0), 7).train()
    assert not probe.backbone.training and not probe.bn.affine
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    x = torch.randn(4, 3, 16, 16)
    out = probe(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert probe.head.weight.grad is not None
    # BatchNorm without affine on the frozen features, in training mode: batch statistics
    f = probe.backbone.forward_head(probe.backbone.forward_features(x), pre_logits=True)
    f = (f - f.mean(0)) / (f.var(0, unbiased=False) + 1e-6).sqrt()
    assert torch.allclose(out, probe.head(f), atol=1e-5)
