"""Autoregressive transformers over visual token ids, class-conditional, three orders behind one API.

``order="raster"``: a GPT (Radford et al. 2019; VQGAN's transformer, Esser et al. 2021) over the
    raster sequence, one token a step:  p(x) = prod_t p(x_t | c, x_<t).
``order="random"``: the same over a random permutation sigma of the grid, drawn per sample
    (sigma-GPT, Pannatier et al. 2024; RandAR, Pang et al. 2024). The input at slot t carries the token
    x_sigma(t-1) with the position embedding of that token AND of the next position sigma(t) to
    predict (sigma-GPT's double positional encoding; RandAR feeds the latter as a separate
    "position instruction" token):  p(x) = prod_t p(x_sigma(t) | c, x_sigma(<t), sigma(<=t)).
``order="masked"``: MaskGIT (Chang et al. 2022): a bidirectional transformer with a [MASK] token,
    trained to predict a cosine-scheduled fraction of masked tokens; decoded in T steps that each
    keep the most confident predictions, several tokens a step.

Conditioning: the class embedding is the first token; ``num_classes`` is the "null" class, used for
classifier-free guidance (Ho & Salimans 2022) and given in training with probability ``class_dropout``.

Sequence layout (N = h*w tokens, D = dim):
    raster / random: slots 0..N-1 = [class, x_sigma(0), ..., x_sigma(N-2)]; slot t predicts x_sigma(t);
                     causal mask in slot order; raster is sigma = identity.
    masked:          slots 0..N = [class, x_0 or MASK, ..., x_{N-1} or MASK]; no mask.
``forward`` always returns logits in raster order (B, N, V), whatever the order.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ..layers.attention import KVCache
from ..layers.block import Block
from ..layers.init import init_transformer_
from .sampling import cfg_logits, cosine_schedule, gumbel_noise, sample_logits

ORDERS = ("raster", "random", "masked")


# ---- the shared decoder trunk (AR and VAR) -------------------------------------------------------
class DecoderBlock(Block):
    """The pre-LN block (layers/block.py) whose attention may read and extend a ``KVCache``:
    x + DropPath(attn(LN(x), cache)); x + DropPath(mlp(LN(x)))."""

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                return_attention: bool = False, kv_cache: KVCache | None = None):
        y = self.attn(self.norm1(x), attn_bias=attn_bias, return_attention=return_attention, kv_cache=kv_cache)
        if return_attention:
            y, attn = y
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return (x, attn) if return_attention else x


class Decoder(nn.Module):
    """A stack of ``DecoderBlock`` + final LayerNorm. x: (B, n, D) -> (B, n, D).

    ``caches`` (one ``KVCache`` per block, from ``new_caches()``): x holds only the new tokens, which
    attend to every token fed before (incremental decoding); ``attn_bias`` is then (n, L + n).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        self.blocks = nn.ModuleList([
            DecoderBlock(dim, num_heads, mlp_ratio, drop=drop, attn_drop=attn_drop, drop_path=dpr[i])
            for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                caches: list[KVCache] | None = None) -> torch.Tensor:
        for i, blk in enumerate(self.blocks):
            x = blk(x, attn_bias, kv_cache=None if caches is None else caches[i])
        return self.norm(x)


def init_decoder_(module: nn.Module, depth: int, std: float = 0.02) -> None:
    """Linear / LayerNorm as every vitkit transformer (std 0.02, layers/init.py); embeddings and
    learned position tables at std 0.02 (nn.Embedding's default N(0, 1) is far too large); the
    residual projections (attn.proj, mlp.fc2) scaled by 1/sqrt(2 depth) (GPT-2, also VAR)."""
    init_transformer_(module, std)
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=std)
        if isinstance(m, DecoderBlock):
            m.attn.proj.weight.data.div_(math.sqrt(2 * depth))
            m.mlp.fc2.weight.data.div_(math.sqrt(2 * depth))
    for name, p in module.named_parameters():
        if "pos" in name.split(".")[-1]:
            nn.init.trunc_normal_(p, std=std)


def causal_bias(n: int, device: torch.device | None = None) -> torch.Tensor:
    """(n, n) additive mask: 0 where key j <= query i, -inf where j > i (strictly causal)."""
    return torch.full((n, n), float("-inf"), device=device).triu(1)


def class_tokens(labels: torch.Tensor | None, batch: int, num_classes: int, dropout: float,
                 training: bool, device: torch.device) -> torch.Tensor:
    """Labels (B,) -> class indices with the null class ``num_classes`` for None (unconditional) and,
    in training, for a random ``dropout`` fraction (CFG's label dropout)."""
    if labels is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    labels = labels.to(device=device, dtype=torch.long).reshape(-1)
    if labels.shape[0] != batch:
        raise ValueError(f"got {labels.shape[0]} labels for a batch of {batch}")
    if labels.numel() and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}] ({num_classes} = the null class), "
                         f"got [{int(labels.min())}, {int(labels.max())}]")
    if training and dropout > 0:
        drop = torch.rand(batch, device=device) < dropout
        labels = labels.masked_fill(drop, num_classes)
    return labels


def token_metrics(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean token cross-entropy over the positions with weight 1 (all when None).

    logits (B, N, V), targets (B, N), weight (B, N) bool. Metrics: "nll" (mean per token),
    "acc" (top-1 per token), "tokens" (how many positions were scored: means x tokens = sums)."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, N)
    correct = (logits.detach().argmax(-1) == targets).float()
    if weight is None:
        weight = torch.ones_like(nll, dtype=torch.bool)
    w = weight.float()
    n = w.sum().clamp_min(1.0)
    loss = (nll * w).sum() / n
    return loss, {"nll": loss.detach(), "acc": (correct * w).sum() / n, "tokens": w.sum()}


# ---- the model ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ARConfig:
    vocab_size: int                       # codebook size V
    grid: tuple[int, int]                 # token grid (h, w); N = h*w
    num_classes: int = 10                 # class ``num_classes`` is the null class
    order: str = "raster"                 # raster | random | masked
    dim: int = 256
    depth: int = 6
    num_heads: int = 8
    mlp_ratio: float = 4.0
    class_dropout: float = 0.1            # label dropout p for classifier-free guidance
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.vocab_size < 2 or len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"need vocab_size >= 2 and a grid (h, w), got {self.vocab_size}, {self.grid}")
        if self.num_classes < 0 or not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"need num_classes >= 0 and class_dropout in [0, 1), got "
                             f"{self.num_classes}, {self.class_dropout}")


class ARTransformer(nn.Module):
    """Class-conditional transformer over token ids (B, h, w) in V codes. See the module docstring.

    ``ARTransformer(ARConfig(...))`` or ``ARTransformer(vocab_size=..., grid=..., ...)``.
    After ``generate``, ``last_forward_passes`` holds the number of transformer forward passes it ran
    (N for raster / random, ``steps`` for masked; with CFG each pass runs a batch of 2B).
    """

    def __init__(self, cfg: ARConfig | None = None, **kwargs):
        super().__init__()
        cfg = dataclasses.replace(cfg, **kwargs) if cfg is not None else ARConfig(**kwargs)
        self.cfg = cfg
        D, V = cfg.dim, cfg.vocab_size
        self.grid, self.seq_len, self.vocab_size = cfg.grid, cfg.grid[0] * cfg.grid[1], V
        self.num_classes = self.null_class = cfg.num_classes
        self.order = cfg.order
        self.mask_id = V if cfg.order == "masked" else None     # the [MASK] token's id (masked only)
        self.class_embed = nn.Embedding(cfg.num_classes + 1, D)
        self.tok_embed = nn.Embedding(V + (cfg.order == "masked"), D)
        self.pos_embed = nn.Parameter(torch.zeros(self.seq_len, D))  # the position a slot predicts / holds
        # sigma-GPT: the position of the token a slot carries (random order only)
        self.cur_pos_embed = nn.Parameter(torch.zeros(self.seq_len, D)) if cfg.order == "random" else None
        self.trunk = Decoder(D, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop, cfg.attn_drop, cfg.drop_path)
        self.head = Linear(D, V)
        self.last_forward_passes = 0
        init_decoder_(self, cfg.depth)

    def no_weight_decay(self) -> set[str]:
        """Position tables and embeddings get no weight decay."""
        return {n for n, _ in self.named_parameters() if "pos_embed" in n or "class_embed" in n}

    # ---------------------------------------------------------------- inputs
    def _flat_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim == 3:
            if tuple(ids.shape[1:]) != self.grid:
                raise ValueError(f"token grid {tuple(ids.shape[1:])} != the model's {self.grid}")
            ids = ids.flatten(1)
        if ids.ndim != 2 or ids.shape[1] != self.seq_len:
            raise ValueError(f"ids must be (B, {self.grid[0]}, {self.grid[1]}) or (B, {self.seq_len}), "
                             f"got {tuple(ids.shape)}")
        return ids.long()

    def random_orders(self, batch: int, generator: torch.Generator | None = None,
                      device: torch.device | None = None) -> torch.Tensor:
        """One permutation sigma of the N positions per sample, (B, N)."""
        return torch.rand(batch, self.seq_len, generator=generator, device=device).argsort(dim=1)

    def random_mask(self, batch: int, generator: torch.Generator | None = None,
                    device: torch.device | None = None) -> torch.Tensor:
        """MaskGIT training mask (B, N), True = masked: r ~ U(0, 1), ceil(gamma(r) N) positions at random
        per sample, gamma(r) = cos(pi r / 2) (at least one)."""
        r = torch.rand(batch, 1, generator=generator, device=device)
        n = (cosine_schedule(r) * self.seq_len).ceil().clamp(1, self.seq_len)
        rank = torch.rand(batch, self.seq_len, generator=generator, device=device).argsort(1).argsort(1)
        return rank < n

    def _slots(self, cls: torch.Tensor, tok_ord: torch.Tensor, perm: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """Inputs of slots t0..t1-1 of the sequential orders, (B, t1 - t0, D).

        cls (B, D); tok_ord (B, >= t1 - 1) tokens in generation order; perm (B, N) = sigma.
        slot 0 = class; slot t = tok(x_sigma(t-1)) [+ cur_pos(sigma(t-1)) for random]; every slot
        t adds pos(sigma(t)), the position it predicts.
        """
        parts = [cls[:, None]] if t0 == 0 else []
        lo = max(t0, 1)
        if t1 > lo:
            tok = self.tok_embed(tok_ord[:, lo - 1:t1 - 1])
            if self.cur_pos_embed is not None:
                tok = tok + self.cur_pos_embed[perm[:, lo - 1:t1 - 1]]
            parts.append(tok)
        return torch.cat(parts, dim=1) + self.pos_embed[perm[:, t0:t1]]

    def _masked_inputs(self, cls: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        """[class, tok(x_p or MASK) + pos(p)], (B, N + 1, D)."""
        return torch.cat([cls[:, None], self.tok_embed(inp) + self.pos_embed], dim=1)

    # ---------------------------------------------------------------- training
    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None = None, perm: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Teacher-forced logits in raster order, (B, N, V): logits[:, p] predicts token p.

        ids (B, h, w) or (B, N); labels (B,) or None (null class). Label dropout in training mode.
        random: ``perm`` (B, N) is sigma (drawn when None); masked: ``mask`` (B, N), True = replaced
        by [MASK] (drawn by ``random_mask`` when None).
        """
        ids = self._flat_ids(ids)
        B, dev = ids.shape[0], ids.device
        cls = self.class_embed(class_tokens(labels, B, self.num_classes, self.cfg.class_dropout, self.training, dev))
        if self.order == "masked":
            if mask is None:
                mask = self.random_mask(B, generator, dev)
            inp = ids.masked_fill(mask.to(dev, torch.bool), self.mask_id)
            return self.head(self.trunk(self._masked_inputs(cls, inp))[:, 1:])
        if self.order == "raster":
            perm = torch.arange(self.seq_len, device=dev).expand(B, -1)
        elif perm is None:
            perm = self.random_orders(B, generator, dev)
        tok_ord = ids.gather(1, perm)                                   # tokens in generation order
        x = self._slots(cls, tok_ord, perm, 0, self.seq_len)
        logits = self.head(self.trunk(x, causal_bias(self.seq_len, dev)))  # slot t predicts x_sigma(t)
        if self.order == "raster":
            return logits
        inverse = perm.argsort(dim=1)                                   # raster position -> slot
        return logits.gather(1, inverse[..., None].expand_as(logits))

    def loss(self, ids: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean token cross-entropy (on the masked tokens for MaskGIT). Metrics: loss, nll, acc, tokens."""
        ids = self._flat_ids(ids)
        mask = self.random_mask(ids.shape[0], generator, ids.device) if self.order == "masked" else None
        logits = self(ids, labels, mask=mask, generator=generator)
        loss, metrics = token_metrics(logits, ids, mask)
        return loss, {"loss": loss.detach(), **metrics}

    # ---------------------------------------------------------------- generation
    def _guided(self, logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """(2B, ..., V) [cond; uncond] -> guided (B, ..., V); (B, ..., V) unchanged when cfg_scale == 1."""
        if cfg_scale == 1.0:
            return logits
        cond, uncond = logits.chunk(2, dim=0)
        return cfg_logits(cond, uncond, cfg_scale)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, cfg_scale: float = 1.0, steps: int = 8,
                 choice_temperature: float = 4.5, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample token ids (B, h, w) for class ``labels`` (B,) (the null class = unconditional).

        temperature 0 = greedy. ``cfg_scale`` s != 1 runs [cond; null] as one 2B batch and samples from
        u + s (c - u). raster / random: N passes, one token each, through a KV cache unless
        ``use_cache=False`` (then pass t recomputes all t + 1 slots; same tokens). masked: ``steps``
        passes (MaskGIT), ``choice_temperature`` scales the Gumbel noise on the confidences, annealed
        by (1 - t/T) (MaskGIT's default 4.5; 0 = keep exactly the most confident).
        """
        dev = self.head.weight.device
        labels = class_tokens(labels, labels.shape[0], self.num_classes, 0.0, False, dev)
        B = labels.shape[0]
        if cfg_scale != 1.0:
            labels = torch.cat([labels, torch.full_like(labels, self.null_class)])
        cls = self.class_embed(labels)
        sample = dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        if self.order == "masked":
            ids = self._generate_masked(cls, B, steps, cfg_scale, choice_temperature, sample)
        else:
            ids = self._generate_sequential(cls, B, cfg_scale, use_cache, sample)
        return ids.view(B, *self.grid)

    def _generate_sequential(self, cls, B, cfg_scale, use_cache, sample) -> torch.Tensor:
        N, dev = self.seq_len, cls.device
        if self.order == "raster":
            perm = torch.arange(N, device=dev).expand(B, -1)
        else:
            perm = self.random_orders(B, sample["generator"], dev)
        reps = cls.shape[0] // B                                         # 2 with CFG
        perm_r = perm.repeat(reps, 1)
        tok_ord = torch.zeros(B * reps, N, dtype=torch.long, device=dev)
        caches = self.trunk.new_caches() if use_cache else None
        for t in range(N):
            if use_cache:
                h = self.trunk(self._slots(cls, tok_ord, perm_r, t, t + 1), caches=caches)
            else:
                h = self.trunk(self._slots(cls, tok_ord, perm_r, 0, t + 1), causal_bias(t + 1, dev))
            logits = self._guided(self.head(h[:, -1]), cfg_scale)       # (B, V)
            tok_ord[:, t] = sample_logits(logits, **sample)[0].repeat(reps)
        self.last_forward_passes = N
        return torch.empty_like(perm).scatter_(1, perm, tok_ord[:B])    # back to raster order

    def _generate_masked(self, cls, B, steps, cfg_scale, choice_temperature, sample) -> torch.Tensor:
        """MaskGIT iterative decoding (Chang et al. 2022, Sec. 3.2): predict every masked token, keep the
        sampled tokens, re-mask the floor(gamma((t+1)/T) N) least confident new ones; the last step
        keeps every sampled token."""
        if steps < 1:
            raise ValueError(f"masked decoding needs steps >= 1, got {steps}")
        N, dev = self.seq_len, cls.device
        reps = cls.shape[0] // B
        ids = torch.full((B, N), self.mask_id, dtype=torch.long, device=dev)
        for t in range(steps):
            logits = self.head(self.trunk(self._masked_inputs(cls, ids.repeat(reps, 1)))[:, 1:])
            logits = self._guided(logits, cfg_scale)                    # (B, N, V)
            unknown = ids == self.mask_id
            sampled, logp = sample_logits(logits, **sample)
            sampled = torch.where(unknown, sampled, ids)
            ratio = (t + 1) / steps
            n_unknown = int(unknown[0].sum())
            n_mask = min(math.floor(N * cosine_schedule(ratio)), n_unknown - 1)
            if t == steps - 1 or n_unknown == 0:
                ids = sampled
                break
            n_mask = max(n_mask, 1)   # MaskGIT: at least one token stays masked until the last step
            conf = logp.masked_fill(~unknown, float("inf"))             # known tokens are never re-masked
            if choice_temperature > 0:
                conf = conf + choice_temperature * (1 - ratio) * gumbel_noise(conf.shape, sample["generator"], dev)
            remask = torch.zeros_like(unknown).scatter_(1, conf.topk(n_mask, dim=1, largest=False).indices, True)
            ids = sampled.masked_fill(remask, self.mask_id)
        self.last_forward_passes = t + 1
        return ids

    # ---------------------------------------------------------------- for the training wrapper
    def tokenize(self, tokenizer, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training targets from a (frozen) VQ tokenizer: {"ids": (B, h, w)}."""
        return {"ids": tokenizer.encode(images)}

    def generate_images(self, tokenizer, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        return tokenizer.decode_ids(self.generate(labels, **kwargs))
