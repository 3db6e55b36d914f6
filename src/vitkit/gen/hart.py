"""HART: hybrid autoregressive transformer (Tang et al. 2024).

A hybrid tokenizer splits the continuous latent z (B, C, h, w) into the discrete multi-scale tokens
of VAR (summing to f_hat) and a continuous residual z - f_hat that the codebook cannot represent.
HART models the discrete part with the VAR transformer and the residual with a small "residual
diffusion" head: an MLP denoiser run per position of the last scale, conditioned on
``cond_norm(h + word_embed(codebook[idx]))``: the transformer's last hidden state there plus that
position's discrete token, through the tokenizer's code vector and the transformer's own input
embedding (HART's ``decoder_norm(last_layer_cond + word_embed(vae_quant_proxy[0].embedding(idx)))``;
its last_layer_cond is the last block's output before the head's norm, here the trunk's output after
its final LayerNorm), trained as a DDPM (Ho et al. 2020) with eps prediction on the residual tokens
(B, h*w, C). Because the residual is
small and simple, HART samples it with only 8 denoising steps (Sec. 3.3; MAR, whose head it
adopts, uses 100); here a DDPM/DDIM sampler on an evenly respaced 8-step subsequence of a
1000-step cosine schedule (Nichol & Dhariwal 2021), as HART's respaced diffusion.

Generation: VAR's K passes -> tokens and f_hat; the head samples the residual; the image is
``tokenizer.decode_latent(f_hat + residual)``.

What the head trains on (``residual_target``): HART's code (``HARTForT2I.forward``) conditions it on
tokens *sampled* from the transformer's own last-scale logits (top-k 600, top-p 0.96, no gradient)
and targets what they leave of the latent, ``last_layer_gt - embedding(sampled)`` ("sampled"); by
default here the ground-truth tokens condition it and the target is the tokenizer's residual
("gt": teacher forcing). Measured (benchmarks/results/generation.md, 3 training seeds each, mnist5k):
classifier-FID 0.91 +- 0.02 with "gt" and 0.93 +- 0.09 with "sampled", class accuracy 89.4 vs 88.0%:
no difference at this scale, so the default stays "gt". Simplifications against HART's code, to keep a
toy model short: the head predicts eps only (HART/MAR also learn the variance), and the last scale is generated in one VAR
pass (HART's default ``num_maskgit_iters=1``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ..layers.pos_embed import sincos_1d
from .ar import token_metrics
from .sampling import sample_logits
from .var import VAR, VARConfig, guidance_scales


# ---- the residual diffusion head -----------------------------------------------------------------
def cosine_alphas_cumprod(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alpha_bar_t, t = 0..T-1, of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), with
    beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at ``max_beta``."""
    f = lambda t: math.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f(t + 1) / f(t), max_beta) for t in range(num_timesteps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0).float()


class AdaLNResBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)), with (shift, scale, gate) from the condition y
    (DiT's adaLN-Zero, as MAR's and HART's ``SimpleMLPAdaLN``)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(Linear(width, width), nn.SiLU(), Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class ResidualDiffusionHead(nn.Module):
    """MLP denoiser eps_theta(x_t, t, c) for tokens of C channels, one position at a time.

    x_t: (M, C), t: (M,) int in [0, T), c: (M, cond_dim) -> eps (M, C).
    """

    def __init__(self, channels: int, cond_dim: int, width: int = 128, depth: int = 3,
                 num_timesteps: int = 1000):
        super().__init__()
        self.channels, self.width, self.num_timesteps = channels, width, num_timesteps
        self.time_embed = nn.Sequential(Linear(width, width), nn.SiLU(), Linear(width, width))
        self.cond_embed = Linear(cond_dim, width)
        self.input_proj = Linear(channels, width)
        self.blocks = nn.ModuleList([AdaLNResBlock(width) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), Linear(width, 2 * width))
        self.out = Linear(width, channels)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(num_timesteps), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """xavier Linears, zero biases; adaLN modulations and the output zeroed (adaLN-Zero: the head
        starts as eps = 0 and every block as the identity), as MAR/HART's head."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in [b.ada[-1] for b in self.blocks] + [self.final_ada[-1], self.out]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.time_embed(sincos_1d(t.float(), self.width).to(x.device, x.dtype)) + self.cond_embed(cond)
        h = self.input_proj(x)
        for blk in self.blocks:
            h = blk(h, y)
        shift, scale = self.final_ada(y).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM's simple loss (Ho et al. 2020, eq. 14), mean over tokens and channels:
        E ||eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t, c)||^2, t ~ U{0..T-1}.
        x0: (M, C), cond: (M, cond_dim)."""
        M, dev = x0.shape[0], x0.device
        t = torch.randint(0, self.num_timesteps, (M,), generator=generator, device=dev)
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        ab = self.alphas_cumprod[t][:, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return F.mse_loss(self(x_t, t, cond), eps)

    def sampling_timesteps(self, steps: int) -> list[int]:
        """``steps`` evenly spaced timesteps from T-1 down to 0 (the respaced schedule)."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"sampling steps must be in [1, {self.num_timesteps}], got {steps}")
        return torch.linspace(self.num_timesteps - 1, 0, steps).round().long().unique_consecutive().tolist()

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, uncond: torch.Tensor | None = None, cfg_scale: float = 1.0,
               steps: int = 8, eta: float = 1.0, clip_x0: float | None = 3.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x0 (M, C) for conditions (M, cond_dim) on the respaced schedule t_1 > ... > t_S:

            x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)        [clipped to +-clip_x0]
            sigma  = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)
            x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma z

        (DDIM, Song et al. 2021, eq. 12): eta = 1 is the DDPM posterior on the respaced steps, eta = 0
        the deterministic DDIM. With ``uncond``, eps = eps_u + s (eps_c - eps_u) (CFG, as HART's head).
        The clip tames x0_hat at the noisiest step, where 1 / sqrt(ab_t) is ~600 (HART clips to [-1, 1]).
        """
        M, dev = cond.shape[0], cond.device
        x = torch.randn(M, self.channels, generator=generator, device=dev, dtype=cond.dtype)
        ts = self.sampling_timesteps(steps)
        for i, t in enumerate(ts):
            ab = self.alphas_cumprod[t]
            ab_prev = self.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)
            tt = torch.full((M,), t, device=dev, dtype=torch.long)
            if uncond is not None and cfg_scale != 1.0:
                eps_c, eps_u = self(torch.cat([x, x]), tt.repeat(2), torch.cat([cond, uncond])).chunk(2)
                eps = eps_u + cfg_scale * (eps_c - eps_u)
            else:
                eps = self(x, tt, cond)
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            if clip_x0 is not None:
                x0 = x0.clamp(-clip_x0, clip_x0)
                eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()            # the eps consistent with the clipped x0
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp_min(0).sqrt() * eps
            if i + 1 < len(ts) and eta > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
        return x


# ---- HART ------------------------------------------------------------------------------------------
RESIDUAL_TARGETS = ("gt", "sampled")
SAMPLED_TOP_K, SAMPLED_TOP_P = 600, 0.96   # HARTForT2I.forward's draw of the last scale's tokens


@dataclass(frozen=True)
class HARTConfig:
    var: VARConfig                        # the discrete transformer
    head_width: int = 128                 # residual diffusion MLP (HART: 37M params at scale)
    head_depth: int = 3
    num_timesteps: int = 1000             # training diffusion steps (cosine schedule)
    sampling_steps: int = 8               # HART's few denoising steps
    diffusion_weight: float = 1.0         # loss = CE(tokens) + w * diffusion loss
    batch_mul: int = 4                    # each residual token is trained at this many t's a step (MAR)
    residual_scale: float = 1.0           # residual / scale is what the head models (HART: 1 / 0.6)
    residual_target: str = "gt"           # the head's tokens: "gt" (teacher forcing) | "sampled" (HART's code)

    def __post_init__(self) -> None:
        if isinstance(self.var, dict):
            object.__setattr__(self, "var", VARConfig(**self.var))
        if self.residual_scale <= 0 or self.batch_mul < 1 or self.sampling_steps < 1:
            raise ValueError(f"need residual_scale > 0, batch_mul >= 1, sampling_steps >= 1, got "
                             f"{self.residual_scale}, {self.batch_mul}, {self.sampling_steps}")
        if self.residual_target not in RESIDUAL_TARGETS:
            raise ValueError(f"residual_target must be one of {RESIDUAL_TARGETS}, got {self.residual_target!r}")


class HART(nn.Module):
    """VAR for the discrete tokens + a residual diffusion head for the continuous residual.

    ``HART(HARTConfig(var=VARConfig(...), ...))`` or ``HART(var=dict(vocab_size=..., scales=..., embed_dim=...), ...)``.
    """

    def __init__(self, cfg: HARTConfig | None = None, **kwargs):
        super().__init__()
        cfg = dataclasses.replace(cfg, **kwargs) if cfg is not None else HARTConfig(**kwargs)
        self.cfg = cfg
        self.var = VAR(cfg.var)
        D, C = cfg.var.dim, cfg.var.embed_dim
        self.scales, self.num_classes, self.null_class = self.var.scales, self.var.num_classes, self.var.null_class
        self.last_len = self.scales[-1] ** 2
        self.cond_norm = nn.LayerNorm(D, eps=1e-6)                       # HART's decoder_norm
        self.head = ResidualDiffusionHead(C, D, cfg.head_width, cfg.head_depth, cfg.num_timesteps)
        self.last_forward_passes = self.last_head_passes = 0

    def no_weight_decay(self) -> set[str]:
        return {f"var.{n}" for n in self.var.no_weight_decay()}

    def head_condition(self, hidden_last: torch.Tensor, tokenizer, ids_last: torch.Tensor) -> torch.Tensor:
        """Per-position condition of the head, HART's: LN(h + word_embed(e[token])), (B, s_K^2, D).
        hidden_last: (B, s_K^2, D) the transformer's output at the last scale; ids_last (B, s_K, s_K);
        e: the tokenizer's code vectors (``tokenizer.code_vectors``)."""
        codes = tokenizer.code_vectors(ids_last.flatten(1).long()).to(hidden_last.dtype)   # (B, s_K^2, C)
        return self.cond_norm(hidden_last + self.var.word_embed(codes))

    @torch.no_grad()
    def head_tokens(self, tokenizer, logits_last: torch.Tensor, ids_last: torch.Tensor, residual: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, s_K, s_K) that condition the head, its target (B, C, h, w)) for ``residual_target``.

        "gt": the tokenizer's tokens and residual. "sampled" (HART's code): tokens drawn from the
        transformer's last-scale logits (B, s_K^2, V) (top-k 600, top-p 0.96), and the target
        ``rest - h_K(sampled)``, where rest = residual + h_K(gt) is the latent minus scales 1..K-1
        (HART's last_layer_gt) and h_K the last scale's term of f_hat (``tokenizer.step``; HART's is
        the bare code vector, vitkit's tokenizer passes it through phi_K)."""
        if self.cfg.residual_target == "gt":
            return ids_last, residual
        side, K = self.scales[-1], len(self.scales)
        sampled = sample_logits(logits_last.detach(), 1.0, SAMPLED_TOP_K, SAMPLED_TOP_P, generator)[0]
        sampled = sampled.view(-1, side, side)
        last = lambda ids: tokenizer.step(None, K - 1, ids)[0].to(residual.dtype)  # noqa: E731  h_K(ids)
        return sampled, residual + last(ids_last) - last(sampled)

    def residual_tokens(self, residual: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, h*w, C), divided by ``residual_scale``."""
        B, C, h, w = residual.shape
        if h * w != self.last_len or C != self.cfg.var.embed_dim:
            raise ValueError(f"the residual must be (B, {self.cfg.var.embed_dim}, {self.scales[-1]}, "
                             f"{self.scales[-1]}) (the last scale's grid), got {tuple(residual.shape)}")
        return residual.flatten(2).transpose(1, 2) / self.cfg.residual_scale

    # ---------------------------------------------------------------- training
    def forward(self, teacher_inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Token logits (B, L, V), as VAR."""
        return self.var(teacher_inputs, labels)

    def loss(self, ids_list: list[torch.Tensor], teacher_inputs: torch.Tensor, residual: torch.Tensor,
             tokenizer, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CE over every token + ``diffusion_weight`` x the head's eps-MSE on the residual tokens
        (``head_tokens``: ground truth or sampled). Metrics: loss, nll, acc, tokens, diff (the head's loss)."""
        h = self.var.forward_hidden(teacher_inputs, labels)             # (B, L, D)
        logits = self.var.head(h)
        ce, metrics = token_metrics(logits, self.var.flat_targets(ids_list))
        ids_last, target = self.head_tokens(tokenizer, logits[:, -self.last_len:], ids_list[-1], residual, generator)
        diff = self.diffusion_loss(h[:, -self.last_len:], tokenizer, ids_last, target, generator)
        loss = ce + self.cfg.diffusion_weight * diff
        return loss, {"loss": loss.detach(), **metrics, "diff": diff.detach()}

    def diffusion_loss(self, hidden_last: torch.Tensor, tokenizer, ids_last: torch.Tensor, residual: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """The head's loss on the residual tokens, each repeated ``batch_mul`` times (at as many t's)."""
        cond = self.head_condition(hidden_last, tokenizer, ids_last).flatten(0, 1)  # (B*n, D)
        x0 = self.residual_tokens(residual).flatten(0, 1)                # (B*n, C)
        r = self.cfg.batch_mul
        return self.head.loss(x0.repeat(r, 1), cond.repeat(r, 1), generator)

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, tokenizer, labels: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, cfg_scale: float = 1.0, cfg_schedule: str = "linear",
                 use_cache: bool = True, sampling_steps: int | None = None, eta: float = 1.0,
                 clip_x0: float | None = 3.0, generator: torch.Generator | None = None):
        """Returns ``(ids_list, f_hat, residual)``; the image is ``tokenizer.decode_latent(f_hat + residual)``.

        VAR's K passes give the tokens, f_hat (B, C, h, w) and the last scale's hidden states; the head
        then samples the residual (B, C, h, w) in ``sampling_steps`` (default ``cfg.sampling_steps``)
        denoising passes, guided by the last scale's CFG scale (``cfg_scale`` under the default linear
        ramp, VAR's; HART's code guides its last scale, tokens and head, with the ratio of the scale
        before, ``cfg * (K - 2) / (K - 1)``: its ``ratio`` is set in the loop over the first K - 1
        scales only; kept as VAR's here). ``last_forward_passes`` = K,
        ``last_head_passes`` = the number of head evaluations (each over all B*h*w positions, 2x with CFG).
        """
        ids_list, f_hat, hidden = self.var.generate_latent(
            tokenizer, labels, temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale,
            cfg_schedule=cfg_schedule, use_cache=use_cache, generator=generator)
        B, reps = ids_list[-1].shape[0], hidden.shape[0] // ids_list[-1].shape[0]
        cond = self.head_condition(hidden, tokenizer, ids_list[-1].repeat(reps, 1, 1))
        cond, uncond = (cond.chunk(2) if reps == 2 else (cond, None))
        steps = sampling_steps or self.cfg.sampling_steps
        s_last = guidance_scales(cfg_scale, len(self.scales), cfg_schedule)[-1]
        x0 = self.head.sample(cond.flatten(0, 1), None if uncond is None else uncond.flatten(0, 1), s_last,
                              steps, eta, clip_x0, generator)           # (B*n, C)
        side = self.scales[-1]
        residual = x0.view(B, side * side, -1).transpose(1, 2).reshape(B, -1, side, side) * self.cfg.residual_scale
        self.last_forward_passes = self.var.last_forward_passes
        self.last_head_passes = len(self.head.sampling_timesteps(steps))
        return ids_list, f_hat, residual.to(f_hat.dtype)

    # ---------------------------------------------------------------- for the training wrapper
    def tokenize(self, tokenizer, images: torch.Tensor) -> dict:
        """Targets from a (frozen) hybrid tokenizer: tokens, teacher inputs and the residual, and the
        tokenizer itself, whose code vectors condition the head (HART's model keeps a proxy of it too)."""
        self.var._check_tokenizer(tokenizer)
        ids_list, residual = tokenizer.encode_hybrid(images)
        return {"ids_list": ids_list, "teacher_inputs": tokenizer.teacher_inputs(ids_list), "residual": residual,
                "tokenizer": tokenizer}

    def generate_images(self, tokenizer, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        _, f_hat, residual = self.generate(tokenizer, labels, **kwargs)
        return tokenizer.decode_latent(f_hat + residual)


@torch.no_grad()
def estimate_residual_scale(tokenizer, images: torch.Tensor) -> float:
    """The std of a hybrid tokenizer's residual on a batch of images: pass it as ``residual_scale`` so
    the head models unit-variance tokens (HART divides by a fixed 0.6 for its own tokenizer)."""
    _, residual = tokenizer.encode_hybrid(images)
    return float(residual.float().std().clamp_min(1e-8))
