"""VAR: visual autoregressive modelling by next-scale prediction (Tian et al. 2024).

A multi-scale residual VQ tokenizer turns an image into K token maps r_1..r_K of sides s_1 < ... < s_K.
VAR factorises p(r_1, ..., r_K) = prod_k p(r_k | c, r_<k) (eq. 4): every token of scale k is
predicted at once from the class and all coarser scales.

Sequence (L = sum_k s_k^2 tokens, D = dim):
    scale 1:  s_1^2 start tokens = class embedding + pos_start
    scale k:  word_embed(f_hat_{k-1} area-interpolated to s_k x s_k)   (``tokenizer.teacher_inputs``)
    every token adds its scale's level embedding and its own learned position embedding.
The output at the tokens of scale k are the logits of r_k. Training applies the block-wise causal
mask (a token of scale k sees every token of scales <= k, VAR's ``attn_bias_for_masking``);
generation feeds one scale per pass through a KV cache, so it needs no mask at all: K passes.
VAR also conditions every block on the class by AdaLN; here the class enters only as the start
token (as the brief of this toolkit asks; a 2-layer MNIST model does not need more).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import Linear
from .ar import Decoder, class_tokens, init_decoder_, token_metrics
from .sampling import cfg_logits, sample_logits


def scale_levels(scales: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """(L,) the scale index k of every token of the flattened sequence [scale 0 (s_0^2), scale 1, ...]."""
    return torch.cat([torch.full((s * s,), k, dtype=torch.long, device=device) for k, s in enumerate(scales)])


def block_causal_bias(scales: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """(L, L) additive mask: 0 where the key's scale <= the query's scale, -inf elsewhere (VAR's
    ``attn_bias_for_masking = where(d >= d^T, 0, -inf)``)."""
    level = scale_levels(scales, device)
    bias = torch.zeros(level.shape[0], level.shape[0], device=device)
    return bias.masked_fill(level[None, :] > level[:, None], float("-inf"))      # key level > query level


def guidance_scales(cfg_scale: float, num_scales: int, schedule: str = "linear") -> list[float]:
    """The CFG scale s_k (``cfg_logits``: u + s_k (c - u)) at each of the K scales.

    "linear" (the default, the official one): VAR's ``autoregressive_infer_cfg`` (and HART's) guides
    scale k with ``t = cfg * k / (K - 1)``, logits ``(1 + t) c - t u``; that is s_k = 1 + (s - 1) k / (K - 1)
    with s = 1 + cfg: no guidance at the first scale, s at the last. VAR's ``cfg`` is s - 1 here
    (its cfg=1.5 is cfg_scale=2.5). One scale gets no guidance (VAR's ratio would be 0 / 0).
    "constant": s at every scale."""
    if schedule == "constant":
        return [float(cfg_scale)] * num_scales
    if schedule == "linear":
        return [1.0 + (cfg_scale - 1.0) * k / max(num_scales - 1, 1) for k in range(num_scales)]
    raise ValueError(f"cfg_schedule must be 'constant' or 'linear', got {schedule!r}")


@dataclass(frozen=True)
class VARConfig:
    vocab_size: int                       # codebook size V (shared by every scale)
    scales: tuple[int, ...]               # token-map sides s_1 < ... < s_K, e.g. (1, 2, 3, 4, 5, 7)
    embed_dim: int                        # the tokenizer's latent channels C (word_embed: C -> dim)
    num_classes: int = 10                 # class ``num_classes`` is the null class
    dim: int = 256
    depth: int = 6
    num_heads: int = 8
    mlp_ratio: float = 4.0
    class_dropout: float = 0.1            # label dropout p for classifier-free guidance
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if not self.scales or min(self.scales) < 1:
            raise ValueError(f"scales must be positive token-map sides, got {self.scales}")
        if self.vocab_size < 2 or self.embed_dim < 1 or self.num_classes < 0:
            raise ValueError(f"need vocab_size >= 2, embed_dim >= 1, num_classes >= 0, got "
                             f"{self.vocab_size}, {self.embed_dim}, {self.num_classes}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")


class VAR(nn.Module):
    """Next-scale prediction transformer. ``VAR(VARConfig(...))`` or ``VAR(vocab_size=..., scales=..., embed_dim=...)``.

    ``forward(teacher_inputs, labels)`` -> logits (B, L, V) of every scale at once;
    ``generate(tokenizer, labels, ...)`` -> the K token maps, one pass per scale
    (``last_forward_passes`` = K afterwards).
    """

    def __init__(self, cfg: VARConfig | None = None, **kwargs):
        super().__init__()
        cfg = dataclasses.replace(cfg, **kwargs) if cfg is not None else VARConfig(**kwargs)
        self.cfg = cfg
        D = cfg.dim
        self.scales, self.vocab_size = cfg.scales, cfg.vocab_size
        self.num_classes = self.null_class = cfg.num_classes
        self.first_l = cfg.scales[0] ** 2
        self.seq_len = sum(s * s for s in cfg.scales)
        ends = torch.tensor([s * s for s in cfg.scales]).cumsum(0).tolist()
        self.begin_ends = list(zip([0] + ends[:-1], ends))               # token range of every scale
        self.class_embed = nn.Embedding(cfg.num_classes + 1, D)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, D))
        self.word_embed = Linear(cfg.embed_dim, D)
        self.lvl_embed = nn.Embedding(len(cfg.scales), D)
        self.pos_embed = nn.Parameter(torch.zeros(self.seq_len, D))     # one position per token, all scales
        self.register_buffer("level", scale_levels(cfg.scales), persistent=False)
        self.register_buffer("attn_bias", block_causal_bias(cfg.scales), persistent=False)
        self.trunk = Decoder(D, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop, cfg.attn_drop, cfg.drop_path)
        self.head = Linear(D, cfg.vocab_size)
        self.last_forward_passes = 0
        init_decoder_(self, cfg.depth)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters()
                if "pos_" in n or n.startswith(("class_embed", "lvl_embed"))}

    # ---------------------------------------------------------------- inputs
    def _level_pos(self, lo: int, hi: int) -> torch.Tensor:
        """Level + position embeddings of tokens lo..hi-1, (hi - lo, D)."""
        return self.lvl_embed(self.level[lo:hi]) + self.pos_embed[lo:hi]

    def _start(self, cls: torch.Tensor) -> torch.Tensor:
        """The first scale's inputs: class embedding + pos_start, (B, s_1^2, D)."""
        return cls[:, None] + self.pos_start + self._level_pos(0, self.first_l)

    def _check_tokenizer(self, tokenizer) -> None:
        scales = getattr(tokenizer, "scales", None)
        if scales is not None and tuple(scales) != self.scales:
            raise ValueError(f"the tokenizer's scales {tuple(scales)} differ from the model's {self.scales}")

    # ---------------------------------------------------------------- training
    def forward_hidden(self, teacher_inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (B, L, D) under the block-wise causal mask.

        teacher_inputs: (B, L - s_1^2, C), ``tokenizer.teacher_inputs(ids)``. Label dropout in training.
        """
        B, n, C = teacher_inputs.shape
        if n != self.seq_len - self.first_l or C != self.cfg.embed_dim:
            raise ValueError(f"teacher inputs must be (B, {self.seq_len - self.first_l}, {self.cfg.embed_dim}) "
                             f"for scales {self.scales}, got {tuple(teacher_inputs.shape)}")
        dev = teacher_inputs.device
        cls = self.class_embed(class_tokens(labels, B, self.num_classes, self.cfg.class_dropout, self.training, dev))
        x = torch.cat([self._start(cls),
                       self.word_embed(teacher_inputs) + self._level_pos(self.first_l, self.seq_len)], dim=1)
        return self.trunk(x, self.attn_bias)

    def forward(self, teacher_inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every scale at once, (B, L, V): tokens begin_ends[k] predict r_k."""
        return self.head(self.forward_hidden(teacher_inputs, labels))

    @staticmethod
    def flat_targets(ids_list: list[torch.Tensor]) -> torch.Tensor:
        """[r_1 (B, s_1, s_1), ..., r_K] -> (B, L), the sequence order of ``forward``."""
        return torch.cat([ids.flatten(1) for ids in ids_list], dim=1).long()

    def loss(self, ids_list: list[torch.Tensor], teacher_inputs: torch.Tensor, labels: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean token cross-entropy over all L tokens (VAR weights every token equally).
        ``generator`` is unused (the signature is shared with the other generators)."""
        loss, metrics = token_metrics(self(teacher_inputs, labels), self.flat_targets(ids_list))
        return loss, {"loss": loss.detach(), **metrics}

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_latent(self, tokenizer, labels: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, cfg_scale: float = 1.0, cfg_schedule: str = "linear",
                        use_cache: bool = True, generator: torch.Generator | None = None):
        """Scale-by-scale sampling. Returns ``(ids_list, f_hat, hidden)``: the K token maps (B, s_k, s_k),
        the tokenizer's cumulative latent f_hat (B, C, h, w), and the final scale's hidden states
        (R*B, s_K^2, D), R = 2 with CFG ([cond; uncond]) else 1.

        Step k feeds only scale k's tokens (the start tokens, then ``word_embed`` of the tokenizer's
        next input) through the KV cache; ``use_cache=False`` recomputes the whole prefix under the
        block-wise mask instead (same tokens). CFG as in ``ARTransformer.generate``, with the per-scale
        scale from ``guidance_scales(cfg_scale, K, cfg_schedule)``: by default VAR's linear ramp, none at
        the first scale and ``cfg_scale`` at the last.
        """
        self._check_tokenizer(tokenizer)
        dev = self.head.weight.device
        labels = class_tokens(labels, labels.shape[0], self.num_classes, 0.0, False, dev)
        B, K = labels.shape[0], len(self.scales)
        guided = cfg_scale != 1.0
        if guided:
            labels = torch.cat([labels, torch.full_like(labels, self.null_class)])
        reps = 2 if guided else 1
        scales = guidance_scales(cfg_scale, K, cfg_schedule)
        caches = self.trunk.new_caches() if use_cache else None
        x, prefix = self._start(self.class_embed(labels)), []
        ids_list, f_hat = [], None
        for k, (s, (lo, hi)) in enumerate(zip(self.scales, self.begin_ends)):
            if use_cache:
                h = self.trunk(x, caches=caches)                        # (R*B, s^2, D)
            else:
                prefix.append(x)
                h = self.trunk(torch.cat(prefix, dim=1), self.attn_bias[:hi, :hi])[:, lo:]
            logits = self.head(h)
            if guided:
                logits = cfg_logits(*logits.chunk(2, dim=0), scales[k])
            ids = sample_logits(logits, temperature, top_k, top_p, generator)[0].view(B, s, s)
            ids_list.append(ids)
            f_hat, nxt = tokenizer.step(f_hat, k, ids)
            if k + 1 < K:
                lo1, hi1 = self.begin_ends[k + 1]
                x = (self.word_embed(nxt.to(h.dtype)) + self._level_pos(lo1, hi1)).repeat(reps, 1, 1)
        self.last_forward_passes = K
        return ids_list, f_hat, h

    @torch.no_grad()
    def generate(self, tokenizer, labels: torch.Tensor, **kwargs) -> list[torch.Tensor]:
        """The K sampled token maps [(B, s_1, s_1), ..., (B, s_K, s_K)]; kwargs as ``generate_latent``."""
        return self.generate_latent(tokenizer, labels, **kwargs)[0]

    # ---------------------------------------------------------------- for the training wrapper
    def tokenize(self, tokenizer, images: torch.Tensor) -> dict:
        """Targets and teacher-forcing inputs from a (frozen) multi-scale tokenizer."""
        self._check_tokenizer(tokenizer)
        ids_list = tokenizer.encode(images)
        return {"ids_list": ids_list, "teacher_inputs": tokenizer.teacher_inputs(ids_list)}

    def generate_images(self, tokenizer, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        return tokenizer.decode_latent(self.generate_latent(tokenizer, labels, **kwargs)[1])
