"""Visual tokenizers: a small conv autoencoder around a quantiser.

    VQTokenizer            encoder -> quant_conv -> VectorQuantizer -> post_quant_conv -> decoder (VQ-VAE)
    MultiScaleVQTokenizer  the same around MultiScaleVQ: token maps at scales s_1..s_K (VAR)
    HybridTokenizer        MultiScaleVQTokenizer whose latent is f = f^ (discrete) + residual (HART)

The autoencoder is sized for 28x28 digits: widths ``channels`` at sides H, H/2, ..., i.e. a
2^(len(channels)-1) downsampling (4x by default: 28x28 -> 7x7 latent); any H, W divisible by it work.
Defaults (channels (16, 32, 32), one ResBlock per level, embed_dim 8, 256 codes) are the
recommended size for 28x28 digits: ~120k parameters. Every ``forward(images)`` returns
``(recon (B, C, H, W), {"loss_vq", "usage", "perplexity"})``.
"""
from __future__ import annotations

import torch
from torch import nn

from .vq import MultiScaleVQ, VectorQuantizer

__all__ = ["Encoder", "Decoder", "VQTokenizer", "MultiScaleVQTokenizer", "HybridTokenizer", "default_scales"]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if c % 8 == 0 else 1, c)


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))) with a 1x1 skip when the width changes (taming's ResnetBlock)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  _norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    """(B, in_chans, H, W) -> (B, out_dim, H/f, W/f), f = 2^(len(channels)-1).

    conv3x3 -> per level: num_res_blocks ResBlocks, then a stride-2 conv3x3 (all but the last level)
    -> GN -> SiLU -> conv3x3 to out_dim.
    """

    def __init__(self, in_chans: int = 1, channels: tuple[int, ...] = (16, 32, 32), out_dim: int = 8,
                 num_res_blocks: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_chans, channels[0], 3, padding=1)]
        c = channels[0]
        for i, width in enumerate(channels):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, width))
                c = width
            if i < len(channels) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers += [_norm(c), nn.SiLU(), nn.Conv2d(c, out_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Mirror of ``Encoder``: (B, in_dim, h, w) -> (B, out_chans, h*f, w*f), nearest x2 upsampling + conv3x3."""

    def __init__(self, out_chans: int = 1, channels: tuple[int, ...] = (16, 32, 32), in_dim: int = 8,
                 num_res_blocks: int = 1):
        super().__init__()
        rev = tuple(reversed(channels))
        c = rev[0]
        layers: list[nn.Module] = [nn.Conv2d(in_dim, c, 3, padding=1)]
        for i, width in enumerate(rev):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, width))
                c = width
            if i < len(rev) - 1:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        layers += [_norm(c), nn.SiLU(), nn.Conv2d(c, out_chans, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class _ConvAutoencoder(nn.Module):
    """Encoder -> quant_conv (1x1) ... post_quant_conv (1x1) -> Decoder, with the input checks."""

    def __init__(self, in_chans: int, img_size: int | tuple[int, int], channels: tuple[int, ...], embed_dim: int,
                 num_res_blocks: int):
        super().__init__()
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if not channels:
            raise ValueError("channels must name at least one width, e.g. (16, 32, 32)")
        f = 2 ** (len(channels) - 1)
        if h % f or w % f:
            raise ValueError(f"img_size {(h, w)} must be divisible by the downsampling {f} "
                             f"(= 2^(len(channels) - 1) for channels={tuple(channels)}); resize or change channels")
        self.in_chans, self.img_size, self.grid = int(in_chans), (h, w), (h // f, w // f)
        self.embed_dim = int(embed_dim)
        self.encoder = Encoder(in_chans, tuple(channels), embed_dim, num_res_blocks)
        self.quant_conv = nn.Conv2d(embed_dim, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, embed_dim, 1)
        self.decoder = Decoder(in_chans, tuple(channels), embed_dim, num_res_blocks)

    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> the continuous latent before quantisation (B, embed_dim, h, w)."""
        if images.ndim != 4 or images.shape[1] != self.in_chans or tuple(images.shape[2:]) != self.img_size:
            raise ValueError(f"expected images (B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}), "
                             f"got {tuple(images.shape)}")
        return self.quant_conv(self.encoder(images))

    def decode_latent(self, f: torch.Tensor) -> torch.Tensor:
        """A latent (B, embed_dim, h, w) (quantised or not) -> images (B, C, H, W)."""
        return self.decoder(self.post_quant_conv(f))


class VQTokenizer(_ConvAutoencoder):
    """VQ-VAE tokenizer: images -> ids (B, h, w) in [0, codebook_size) -> images.

    Keywords after num_res_blocks (beta, ema, decay, eps, restart_dead, dead_after, data_init) go to
    ``VectorQuantizer``.
    """

    def __init__(self, in_chans: int = 1, img_size: int | tuple[int, int] = 28,
                 channels: tuple[int, ...] = (16, 32, 32),
                 embed_dim: int = 8, codebook_size: int = 256, num_res_blocks: int = 1, **vq_kwargs):
        super().__init__(in_chans, img_size, channels, embed_dim, num_res_blocks)
        self.quantizer = VectorQuantizer(codebook_size, embed_dim, **vq_kwargs)
        self.codebook_size = self.quantizer.codebook_size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z_q, _, info = self.quantizer(self.latent(images))
        return self.decode_latent(z_q), {k: info[k] for k in ("loss_vq", "usage", "perplexity")}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> ids (B, h, w) int64 (no codebook update)."""
        z = self.latent(images).float()
        ids = self.quantizer.nearest(z.movedim(1, -1).reshape(-1, self.embed_dim))
        return ids.view(z.shape[0], *self.grid)

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> images (B, C, H, W)."""
        if ids.ndim != 3 or tuple(ids.shape[1:]) != self.grid:
            raise ValueError(f"ids must be (B, {self.grid[0]}, {self.grid[1]}), got {tuple(ids.shape)}")
        return self.decode_latent(self.quantizer.lookup(ids.long()).permute(0, 3, 1, 2))


def default_scales(side: int) -> tuple[int, ...]:
    """VAR-like scales ending at the latent side: (1, 2, 3, 4, 5, 7) for 7, else those of
    (1, 2, 3, 4, 5, 7, 10, 13, 16) below the side, then the side."""
    return tuple(s for s in (1, 2, 3, 4, 5, 7, 10, 13, 16) if s < side) + (side,)


class MultiScaleVQTokenizer(_ConvAutoencoder):
    """VAR tokenizer: images -> K token maps (B, s_k, s_k) over one codebook -> images.

    scales: None -> ``default_scales(latent side)``; the last must equal the (square) latent side.
    quant_resi, num_phi: VAR's phi (see ``MultiScaleVQ``); other keywords go to ``VectorQuantizer``
    (ema defaults to True here; VAR learns its codebook by gradient, ema=False).
    Generation: ``f = None; for k: ids_k = sample(...); f, nxt = tok.step(f, k, ids_k)``; then
    ``tok.decode_latent(f)``. Training a generator: ``tok.teacher_inputs(tok.encode(images))``.
    """

    def __init__(self, in_chans: int = 1, img_size: int | tuple[int, int] = 28,
                 channels: tuple[int, ...] = (16, 32, 32),
                 embed_dim: int = 8, codebook_size: int = 256, scales: tuple[int, ...] | None = None,
                 num_res_blocks: int = 1, quant_resi: float = 0.5, num_phi: int = 4, **vq_kwargs):
        super().__init__(in_chans, img_size, channels, embed_dim, num_res_blocks)
        h, w = self.grid
        if h != w:
            raise ValueError(f"multi-scale tokens need a square latent, got {self.grid}; use a square img_size")
        scales = default_scales(h) if scales is None else tuple(scales)
        if scales[-1] != h:
            raise ValueError(f"the last scale must be the latent side {h}, got scales={scales}")
        self.quantizer = MultiScaleVQ(codebook_size, embed_dim, scales, quant_resi, num_phi, **vq_kwargs)
        self.scales, self.codebook_size = self.quantizer.scales, self.quantizer.codebook_size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f_hat, _, info = self.quantizer(self.latent(images))
        return self.decode_latent(f_hat), info

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images -> K ids maps [(B, s_k, s_k) int64] (no codebook update)."""
        return self.quantizer.quantize(self.latent(images))[0]

    def decode_ids(self, ids_list: list[torch.Tensor]) -> torch.Tensor:
        """K ids maps -> images, decoding f^ = sum_k phi_k(bicubic(e[ids_k]))."""
        return self.decode_latent(self.quantizer.ids_to_fhat(ids_list))

    def code_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> the codebook's vectors (..., embed_dim) (HART's head reads them)."""
        return self.quantizer.vq.lookup(ids.long())

    def teacher_inputs(self, ids_list: list[torch.Tensor]) -> torch.Tensor:
        """(B, sum_{k>=1} s_k^2, C): the generator's teacher-forcing inputs (``MultiScaleVQ.teacher_inputs``)."""
        return self.quantizer.teacher_inputs(ids_list)

    def step(self, f_hat: torch.Tensor | None, k: int, ids_k: torch.Tensor):
        """(f^ or None, k, ids_k (B, s_k, s_k)) -> (new f^ (B, C, h, w), next input (B, s_{k+1}^2, C) or None)."""
        return self.quantizer.step(f_hat, k, ids_k)


class HybridTokenizer(MultiScaleVQTokenizer):
    """HART's hybrid tokenizer (Tang et al. 2024, Sec. 3.1): the continuous latent f is split into
    discrete multi-scale tokens (f^) and a continuous residual f - f^.

    Training (HART's ``forward_with_double_decoder`` / ``skip_continuous_prob``, one decoder here):
    each step decodes, with probability ``p_discrete`` (0.5 in HART), the discrete-only f^ (with the
    straight-through gradient), otherwise the full continuous latent f^ + (f - f^) = f; the VQ losses
    apply in both cases. In eval mode forward decodes f and adds "recon_discrete" (decoding f^) to info.

    HART's recipe (``hart_autoencoder.py``, ``freeze_codebook_for_hybrid=True``) starts from a trained
    VAR tokenizer and trains its decoder only: ``start_from(multiscale_tokenizer)`` loads every weight
    and freezes the encoder, quant_conv and quantizer (``freeze_discrete``), so the discrete tokens
    stay exactly the VAR tokenizer's. A hybrid tokenizer built on its own trains everything jointly
    from scratch (what vitkit did before; its discrete tokens reconstruct worse than a multi-scale
    tokenizer's trained alone).
    """

    def __init__(self, *args, p_discrete: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= p_discrete <= 1.0:
            raise ValueError(f"p_discrete must be a probability in [0, 1], got {p_discrete}")
        self.p_discrete = float(p_discrete)
        self.discrete_frozen = False

    def discrete_path(self) -> list[nn.Module]:
        """What makes the discrete tokens: encoder, quant_conv and the quantizer (codebook and phi)."""
        return [self.encoder, self.quant_conv, self.quantizer]

    def start_from(self, tokenizer: MultiScaleVQTokenizer, freeze: bool = True) -> HybridTokenizer:
        """Load every weight (and codebook buffer) of a trained multi-scale tokenizer of the same
        architecture, decoder included, and with ``freeze`` (HART's default) ``freeze_discrete``.
        Raises ValueError when the architectures differ."""
        own, theirs = self.state_dict(), tokenizer.state_dict()
        wrong = sorted(set(own) ^ set(theirs)) + [k for k in own if k in theirs and own[k].shape != theirs[k].shape]
        if wrong or tuple(getattr(tokenizer, "scales", ())) != self.scales:
            raise ValueError(f"the multi-scale tokenizer does not fit this hybrid one (scales {self.scales}; "
                             f"differing weights {wrong[:6]}): build it with the same options")
        self.load_state_dict(theirs)
        return self.freeze_discrete() if freeze else self

    def freeze_discrete(self) -> HybridTokenizer:
        """HART's ``freeze_codebook_for_hybrid``: the encoder, quant_conv and quantizer get
        ``requires_grad=False`` (the trainer's optimizer skips them) and stay in eval mode whatever
        ``train()`` is called with, so the EMA codebook and its dead-code restarts are not updated
        either. Only the decoder and post_quant_conv train."""
        for m in self.discrete_path():
            m.requires_grad_(False)
        self.discrete_frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> HybridTokenizer:
        super().train(mode)
        if self.discrete_frozen:
            for m in self.discrete_path():
                m.eval()
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        f = self.latent(images)
        f_hat, _, info = self.quantizer(f)
        if self.training:
            discrete = bool(torch.rand(()) < self.p_discrete)
            return self.decode_latent(f_hat if discrete else f), info
        return self.decode_latent(f), {**info, "recon_discrete": self.decode_latent(f_hat)}

    @torch.no_grad()
    def encode_hybrid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """images -> (K ids maps, residual f - f^ (B, C, h, w)); decode_latent(f^ + residual) is the
        continuous reconstruction."""
        f = self.latent(images).float()
        ids_list, f_hat = self.quantizer.quantize(f)
        return ids_list, f - f_hat
