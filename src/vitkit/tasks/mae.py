"""Masked Autoencoders (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners").

Mask a large random subset of the patches (75%), encode the visible ones only, and let a light
decoder reconstruct the pixels of the masked ones from the encoded patches and mask tokens:

    x_vis, mask, ids_restore = random_masking(E x_p + E_pos, r)          (Sec. 3, "masking")
    z = Encoder([x_class + E_pos^0; x_vis])                              (the ViT, visible tokens only)
    y = Decoder(unshuffle([W_d z_patch; m, ..., m]) + E_dec)             (Sec. 3, "MAE decoder")
    L = 1/|M| sum_{i in M} ||y_i - t_i||^2 / (P*P*C)                     (MSE on masked patches only)

t_i is patch i's pixels, or with ``norm_pix_loss`` its pixels normalised by the patch's own mean and
variance, t = (x - mu) / sqrt(var + 1e-6) (Sec. 3, "reconstruction target"; unbiased var as MAE).

``MAE`` wraps a vitkit ``VisionTransformer`` (kept as ``backbone``, so a checkpoint's ``backbone.*``
keys are the encoder) and owns the decoder; ``MAEPretrain`` is the trainer's task. After
pre-training, fine-tune with ``classifier_from_mae`` (the same ViT, its weights, a new zero head) or
probe linearly with ``LinearProbe`` (MAE Sec. 4 / appendix A.2: frozen features, BatchNorm without
affine, a linear head). HF's ``ViTMAEForPreTraining`` loads into ``MAE`` with
``vitkit.weights.mae.load_hf_mae`` and matches it to 1e-5 (tests/weights/test_mae_hf.py).
"""
from __future__ import annotations

import copy

import torch
from einops import rearrange
from torch import nn

from ..layers import Block, Linear, PatchEmbed, SinCosPosEmbed
from ..layers.drop import keep_random_tokens
from ..models.vit import VisionTransformer
from .pretrained import LinearProbe, backbone_state_dict  # noqa: F401  (re-exported)

KEEP_RULES = ("round", "floor")


# ---- masking -------------------------------------------------------------------------------------
def num_keep(num_patches: int, mask_ratio: float, rule: str = "round") -> int:
    """How many of ``num_patches`` tokens stay visible at mask ratio r.

    "round" (vitkit's default): ``round((1 - r) * N)``, the nearest integer (Python's round, so an
        exact half goes to the even neighbour: 24.5 -> 24).
    "floor": ``int(N * (1 - r))``, what MAE's code and HF ``ViTMAEEmbeddings.random_masking`` do.
        Truncation also drops a token to float round-off: N=10, r=0.9 keeps int(0.9999999999999998) = 0.
    The two agree whenever the fractional part of (1 - r) N is below one half and not a round-off
    below an integer (N=16, 49, 196 at r=0.75; N=64 at r=0.5); e.g. N=16, r=0.15 keeps 14 by "round"
    and 13 by "floor". ``vitkit.weights.mae.load_hf_mae`` builds its MAE with "floor", so a loaded HF
    checkpoint masks exactly like HF for every N and r.
    """
    if rule == "round":
        return round((1.0 - mask_ratio) * num_patches)
    if rule == "floor":
        return int(num_patches * (1.0 - mask_ratio))
    raise ValueError(f"keep rule must be one of {KEEP_RULES}, got {rule!r}")


def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None,
                   rule: str = "round") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by per-sample shuffling (MAE ``random_masking``).

    x: (B, N, D) patch tokens in raster order. noise: (B, N), default uniform in [0, 1); the
    ``len_keep = num_keep(N, mask_ratio, rule)`` tokens with the smallest noise stay visible.
        ids_shuffle = argsort(noise, dim=1)          # ascending: small noise is kept
        ids_restore = argsort(ids_shuffle, dim=1)    # gather(shuffled, ids_restore) = original order
    Returns
        x_masked (B, len_keep, D): the visible tokens, in the order of increasing noise;
        mask (B, N) float32: 0 = keep (visible), 1 = remove (masked), in the ORIGINAL token order;
        ids_restore (B, N) int64.
    Feeding the same ``noise`` as HF's ``ViTMAEForPreTraining(noise=...)`` gives HF's mask (rule "floor").
    """
    B, N, D = x.shape
    len_keep = num_keep(N, mask_ratio, rule)
    x_masked, ids_shuffle = keep_random_tokens(x, len_keep, noise)     # (B, len_keep, D), (B, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)                    # (B, N)
    mask = torch.ones(B, N, device=x.device)                           # in shuffled order: 0 for the kept
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)                          # back to the original order
    return x_masked, mask, ids_restore


# ---- pixels <-> patches --------------------------------------------------------------------------
def patchify(images: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, ph*pw*C), patches in raster order, pixels (row, column, channel) within
    a patch: MAE's and HF's order (``einsum('nchpwq->nhwpqc')``)."""
    ph, pw = patch_size
    if images.shape[-2] % ph or images.shape[-1] % pw:
        raise ValueError(f"image size {tuple(images.shape[-2:])} is not divisible by the patch size {patch_size}")
    return rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=ph, q=pw)


def unpatchify(patches: torch.Tensor, patch_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, ph*pw*C) -> (B, C, gh*ph, gw*pw), the inverse of ``patchify``; grid = (gh, gw), N = gh*gw."""
    ph, pw = patch_size
    gh, gw = grid
    if patches.shape[1] != gh * gw or patches.shape[2] % (ph * pw):
        raise ValueError(f"patches {tuple(patches.shape)} do not fit a {gh}x{gw} grid of {ph}x{pw} patches")
    return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=gh, w=gw, p=ph, q=pw)


# ---- the model -----------------------------------------------------------------------------------
def check_maskable(backbone: nn.Module) -> None:
    """Raise a ValueError naming why MAE cannot drop tokens from ``backbone``'s input."""
    if not isinstance(backbone, VisionTransformer):
        raise ValueError(f"MAE masks a vitkit VisionTransformer; got {type(backbone).__name__} (windowed and "
                         f"pyramid families cannot drop tokens)")
    if not isinstance(backbone.patch_embed, PatchEmbed):
        raise ValueError("MAE needs one token per image patch (a conv PatchEmbed); a hybrid CNN stem mixes "
                         "neighbouring patches before masking. Build the ViT with hybrid=None")
    if backbone.rel_pos is not None:
        raise ValueError("MAE cannot mask a ViT with a relative position bias (its table indexes the full "
                         "grid inside every block); use pos_embed='sincos' (MAE) or 'learn'")
    if backbone.pos_embed is not None and backbone.cfg.where != "input":
        raise ValueError(f"MAE adds the position embedding once, before masking; this ViT adds it "
                         f"{backbone.cfg.where!r}. Use pos_embed_where='input'")
    if backbone.num_classes > 0 or backbone.cfg.pre_logits:
        raise ValueError("MAE pre-trains the encoder only: build the backbone with num_classes=0 and "
                         "pre_logits=False (an unused head gets no gradient, which DDP rejects); install a "
                         "head after pre-training with classifier_from_mae / reset_classifier(K)")


class MAE(nn.Module):
    """A ViT encoder (``backbone``) on the visible patches + a light decoder that predicts every patch.

    backbone: a vitkit ``VisionTransformer`` with a conv ``PatchEmbed``, an additive position
        embedding at the input (or none) and no head (``num_classes=0``); MAE uses pos_embed="sincos".
        Its own modules run the encoder; its weights are not copied.
    decoder_dim, decoder_depth, decoder_heads, mlp_ratio: the decoder's width, blocks, heads and MLP
        ratio (MAE's default decoder: 512 wide, 8 blocks, 16 heads, ratio 4).
    mask_ratio: the fraction of patches removed (0.75); keep_rule: how the kept count is rounded
        (``num_keep``). norm_pix_loss: per-patch normalised pixel targets.
    qkv_bias, norm_eps: the decoder's attention bias and LayerNorm eps (default: the backbone's).

    ``forward(images, noise=None) -> (loss, pred (B, N, P*P*C), mask (B, N))``, the three stages
    ``forward_encoder`` / ``forward_decoder`` / ``forward_loss`` separately callable.
    """

    def __init__(self, backbone: VisionTransformer, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_heads: int = 16, mlp_ratio: float = 4.0, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = False, keep_rule: str = "round", qkv_bias: bool = True,
                 norm_eps: float | None = None):
        super().__init__()
        check_maskable(backbone)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if keep_rule not in KEEP_RULES:
            raise ValueError(f"keep_rule must be one of {KEEP_RULES}, got {keep_rule!r}")
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim {decoder_dim} is not divisible by decoder_heads {decoder_heads}")
        self.backbone = backbone
        self.mask_ratio, self.keep_rule, self.norm_pix_loss = float(mask_ratio), keep_rule, bool(norm_pix_loss)
        self.patch_size = backbone.patch_embed.patch_size
        self.in_chans = backbone.patch_embed.in_chans
        self.num_prefix_tokens = backbone.num_prefix_tokens  # class (and distillation) token(s)
        eps = backbone.cfg.norm_eps if norm_eps is None else norm_eps
        self.decoder_cfg = dict(decoder_dim=decoder_dim, decoder_depth=decoder_depth, decoder_heads=decoder_heads,
                                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, norm_eps=eps)

        self.decoder_embed = Linear(backbone.num_features, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # fixed 2D sin-cos table (not learned), a zero row for each prefix token, as MAE
        self.decoder_pos_embed = SinCosPosEmbed(backbone.grid_size, decoder_dim, self.num_prefix_tokens)
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, decoder_heads, mlp_ratio, qkv_bias, norm_eps=eps)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=eps)
        self.decoder_pred = Linear(decoder_dim, self.patch_size[0] * self.patch_size[1] * self.in_chans)
        self.init_decoder_weights()

    def init_decoder_weights(self) -> None:
        """MAE's init for the decoder: xavier-uniform Linears (the fused qkv as one matrix, as MAE's timm
        blocks), zero biases, LayerNorm 1 / 0, mask token normal(std 0.02). The backbone keeps its own."""
        for name, m in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """The backbone's tokens and tables, and the mask token (vitkit's one rule for tokens)."""
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()} | {"mask_token"}

    # ---- shapes ------------------------------------------------------------------------------
    def grid_of(self, images: torch.Tensor) -> tuple[int, int]:
        """The (gh, gw) patch grid of a (B, C, H, W) batch."""
        return self.backbone.patch_embed.dynamic_grid(images.shape[-2], images.shape[-1])

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, P*P*C) in HF's / MAE's pixel order."""
        return patchify(images, self.patch_size)

    def unpatchify(self, patches: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, N, P*P*C) -> (B, C, H, W); grid defaults to the backbone's."""
        return unpatchify(patches, self.patch_size, grid or self.backbone.grid_size)

    def make_noise(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform masking noise (B, N) for ``images`` on their device; drawn on the CPU from
        ``generator`` when given (the same masks on every device)."""
        gh, gw = self.grid_of(images)
        noise = torch.rand(images.shape[0], gh * gw, generator=generator)
        return noise.to(images.device)

    # ---- the three stages ----------------------------------------------------------------------
    def forward_encoder(self, images: torch.Tensor, noise: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) -> (latent (B, prefix + len_keep, D), mask (B, N), ids_restore (B, N)).

        Patch embedding, + position embedding on the patch tokens, masking, prefix token(s) with their
        own position rows in front, the backbone's (pre-norm,) blocks and final norm: the ViT's
        ``forward_features`` on the visible tokens only.
        """
        bb, p = self.backbone, self.num_prefix_tokens
        grid = self.grid_of(images)
        x = bb.patch_embed(images)                                     # (B, N, D), checks the input
        table = bb.pos_embed.table(grid) if bb.pos_embed is not None else None   # (1, p + N, D)
        if table is not None:
            x = x + table[:, p:]
        x, mask, ids_restore = random_masking(x, self.mask_ratio, noise, self.keep_rule)
        prefix = [t for t in (bb.cls_token, bb.dist_token) if t is not None]
        if prefix:
            tokens = torch.cat(prefix, dim=1)                          # (1, p, D)
            if table is not None:
                tokens = tokens + table[:, :p]
            x = torch.cat([tokens.expand(x.shape[0], -1, -1), x], dim=1)   # (B, p + len_keep, D)
        x = bb.pos_drop(x)
        norm_pre = getattr(bb, "norm_pre", None)  # CLIP's ln_pre (Identity unless the ViT asks for it)
        if norm_pre is not None:
            x = norm_pre(x)
        for blk in bb.blocks:
            x = blk(x)
        return bb.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor,
                        grid: tuple[int, int] | None = None) -> torch.Tensor:
        """latent (B, p + len_keep, D), ids_restore (B, N) -> pred (B, N, P*P*C), every patch.

        Mask tokens fill the removed places, ``ids_restore`` puts all N back in raster order, then the
        fixed position table, the decoder blocks, norm and the pixel projection; prefix outputs dropped.
        """
        p = self.num_prefix_tokens
        x = self.decoder_embed(latent)                                 # (B, p + len_keep, Dd)
        B, N = ids_restore.shape
        fill = self.mask_token.to(x.dtype).expand(B, N + p - x.shape[1], -1)
        patches = torch.cat([x[:, p:], fill], dim=1)                   # (B, N, Dd), shuffled order
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))  # unshuffle
        x = torch.cat([x[:, :p], patches], dim=1)                      # (B, p + N, Dd)
        x = self.decoder_pos_embed(x, grid or self.backbone.grid_size)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, p:]          # (B, N, P*P*C)

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction target (B, N, P*P*C): pixels, or per-patch normalised with ``norm_pix_loss``."""
        t = self.patchify(images).float()
        if self.norm_pix_loss:
            mean, var = t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)   # unbiased var, as MAE
            t = (t - mean) / (var + 1.0e-6) ** 0.5
        return t

    def forward_loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                     reduction: str = "mean") -> torch.Tensor:
        """Mean squared error on the masked patches only.

        Per patch: mean over its P*P*C values; then the mean over masked patches (mask == 1): over the
        whole batch (``reduction="mean"``, MAE's and HF's loss) or per sample (``"none"`` -> (B,)).
        """
        per_patch = ((pred.float() - self.target(images)) ** 2).mean(dim=-1)   # (B, N)
        mask = mask.float()
        if reduction == "mean":
            return (per_patch * mask).sum() / mask.sum()
        if reduction == "none":
            return (per_patch * mask).sum(dim=1) / mask.sum(dim=1)
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) -> (loss, pred (B, N, P*P*C), mask (B, N), 1 = masked)."""
        grid = self.grid_of(images)
        n = grid[0] * grid[1]
        keep = num_keep(n, self.mask_ratio, self.keep_rule)
        if keep >= n or (keep == 0 and self.num_prefix_tokens == 0):
            raise ValueError(f"mask_ratio {self.mask_ratio} keeps {keep} of {n} patches ({self.keep_rule!r} rule): "
                             f"MAE needs at least one masked patch (and one visible token)")
        latent, mask, ids_restore = self.forward_encoder(images, noise)
        pred = self.forward_decoder(latent, ids_restore, grid)
        return self.forward_loss(images, pred, mask), pred, mask


# ---- the task ------------------------------------------------------------------------------------
class MAEPretrain:
    """The trainer's task for ``MAE``: reconstruct masked patches. Labels are ignored.

    Training: a fresh random mask per batch (torch's RNG, reseeded by the trainer every epoch).
    Evaluation: the masked reconstruction loss with a deterministic mask, the noise drawn from a
    ``torch.Generator`` seeded with ``eval_seed`` for every batch, so the test loss is reproducible
    and comparable across epochs and runs.
    """

    main_metric = ("loss", "min")

    def __init__(self, eval_seed: int = 0):
        self.eval_seed = int(eval_seed)

    def __repr__(self) -> str:
        return f"MAEPretrain(eval_seed={self.eval_seed})"

    @staticmethod
    def _images(batch) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError("MAEPretrain expects batches (images (B, C, H, W), labels) or an image tensor")
        return images

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Metrics: "loss" (MSE on the masked patches)."""
        loss, _, _ = model(self._images(batch))
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor | int]:
        """"loss_sum": the per-sample masked reconstruction loss summed over the batch; "count": B."""
        images = self._images(batch)
        mae = getattr(model, "module", model)  # DDP-wrapped or not
        noise = mae.make_noise(images, torch.Generator().manual_seed(self.eval_seed))
        _, pred, mask = model(images, noise)
        return {"loss_sum": mae.forward_loss(images, pred, mask, reduction="none").sum(),
                "count": images.shape[0]}


# ---- after pre-training --------------------------------------------------------------------------
def classifier_from_mae(mae: MAE, num_classes: int, global_pool: str | None = None) -> VisionTransformer:
    """Fine-tuning (MAE Sec. 4): a copy of the pre-trained encoder with a new zero-initialised head.

    The same as building the backbone's ViT config, ``load_state_dict(backbone_state_dict(ckpt))``
    and ``reset_classifier(num_classes, global_pool)``; train it with ``tasks.Classify``.
    """
    model = copy.deepcopy(mae.backbone)
    model.reset_classifier(num_classes, global_pool)
    return model
