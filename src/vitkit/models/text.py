"""CLIP's text encoder (Radford et al. 2021, Sec. 2.4) and a byte-level tokenizer for it.

    tokens = [sot, b_1 + 1, ..., b_n + 1, eot, pad, ..., pad]       (B, L), bytes of the UTF-8 text
    z_0 = E_tok[tokens] + E_pos[:L]                                  token + learned position embedding
    z_l = Block_l(z_{l-1}, causal mask)                              pre-LN blocks, masked self-attention
    f = LN(z_L)[eot position]                                        the feature of the [EOS] token

"The text encoder is a Transformer ... masked self-attention was used in the text encoder ... The
[EOS] token's activations at the highest layer of the transformer are treated as the feature
representation of the text, which is layer normalized and then linearly projected" (Sec. 2.4). The
linear projection lives in ``vitkit.tasks.clip.CLIP``. CLIP's BPE vocabulary (49,152 merges) is not
shipped here: the ``ByteTokenizer`` maps every UTF-8 byte to one token (vocabulary 259), which is
enough for captions of a few words and needs no files. A model loaded from HF CLIP weights keeps HF's
vocabulary and pools like HF (see ``TextConfig.eot_id``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import Block
from ..layers.init import init_transformer_
from ..layers.mlp import get_act_layer
from .registry import build_from_config


class ByteTokenizer:
    """UTF-8 bytes -> token ids, padded or truncated to ``context_length`` (open_clip's ``tokenize`` layout).

    Ids: ``pad = 0``, byte ``b`` -> ``b + 1`` (1..256), ``sot = 257``, ``eot = 258``; so ``vocab_size = 259``
    and the eot token has the highest id in every row (CLIP's argmax pooling finds it too).
    ``__call__(texts) -> (B, context_length)`` int64: ``[sot, bytes..., eot, pad...]``. A text longer than
    ``context_length - 2`` bytes is cut, and the last position still holds ``eot`` (open_clip's truncation).
    """

    pad, sot, eot = 0, 257, 258
    vocab_size = 259

    def __init__(self, context_length: int = 32):
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (sot, one byte, eot), got {context_length}")
        self.context_length = context_length

    def __repr__(self) -> str:
        return f"ByteTokenizer(context_length={self.context_length})"

    def encode(self, text: str) -> list[int]:
        """One text -> ``[sot, bytes + 1 ..., eot]``, not padded, cut to ``context_length`` (eot kept)."""
        if not isinstance(text, str):
            raise ValueError(f"ByteTokenizer encodes str, got {type(text).__name__}")
        ids = [self.sot, *(b + 1 for b in text.encode("utf-8")), self.eot]
        if len(ids) > self.context_length:
            ids = ids[:self.context_length - 1] + [self.eot]
        return ids

    def decode(self, ids) -> str:
        """Token ids (a row, with or without sot/eot/pad) -> the text; stops at the first eot.
        A cut in the middle of a multi-byte character decodes to U+FFFD."""
        out = bytearray()
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == self.eot:
                break
            if 1 <= i <= 256:
                out.append(i - 1)
        return out.decode("utf-8", errors="replace")

    def __call__(self, texts: str | list[str] | tuple[str, ...]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            out[row, :len(ids)] = torch.tensor(ids)
        return out


@dataclass(frozen=True)
class TextConfig:
    """The text tower. Defaults: the byte tokenizer's vocabulary and eot id, a small width for digits."""
    vocab_size: int = ByteTokenizer.vocab_size
    context_length: int = 32            # learned positions; longer inputs are an error
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    act: str = "quick_gelu"             # "gelu" or "quick_gelu" (OpenAI CLIP)
    norm_eps: float = 1e-5
    eot_id: int | None = ByteTokenizer.eot  # pool at the first eot; None: at the argmax id (HF eos_token_id == 2)
    tokenizer: str = "bytes"            # "bytes" (ByteTokenizer(context_length)) or "none" (the caller's ids)
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.width % self.num_heads:
            raise ValueError(f"text width {self.width} is not divisible by num_heads {self.num_heads}")
        get_act_layer(self.act)
        if self.tokenizer not in ("bytes", "none"):
            raise ValueError(f"tokenizer must be 'bytes' or 'none', got {self.tokenizer!r}")
        if self.tokenizer == "bytes" and self.vocab_size < ByteTokenizer.vocab_size:
            raise ValueError(f"the byte tokenizer needs vocab_size >= {ByteTokenizer.vocab_size}, "
                             f"got {self.vocab_size}")
        if self.eot_id is not None and not 0 <= self.eot_id < self.vocab_size:
            raise ValueError(f"eot_id {self.eot_id} is outside the vocabulary (size {self.vocab_size})")
        if self.context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {self.context_length}")


def causal_mask(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n, n) additive attention bias: 0 on and below the diagonal, -inf above (token i sees j <= i)."""
    return torch.full((n, n), float("-inf"), device=device, dtype=dtype).triu(1)


class TextTransformer(nn.Module):
    """Token ids (B, L) -> pooled text features (B, width), L <= ``context_length``.

    ``forward_features`` returns every token's normed feature (B, L, width); ``pool`` takes the eot
    token's. ``tokenizer`` (``ByteTokenizer`` or None) turns strings into the ids this tower reads.
    """

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.width = self.num_features = cfg.width
        self.tokenizer = ByteTokenizer(cfg.context_length) if cfg.tokenizer == "bytes" else None
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        act = get_act_layer(cfg.act)
        self.blocks = nn.ModuleList([
            Block(cfg.width, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, norm_eps=cfg.norm_eps, act_layer=act)
            for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.register_buffer("attn_mask", causal_mask(cfg.context_length), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        init_transformer_(self)                                          # Linear 0.02, LayerNorm 1 / 0
        nn.init.normal_(self.token_embedding.weight, std=0.02)           # open_clip's text init
        nn.init.normal_(self.positional_embedding, std=0.01)

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding"}

    def config_dict(self) -> dict:
        """JSON-ready fields that rebuild this tower (``kind`` tells it from the locked tower)."""
        return {"kind": "transformer", **{k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "name"}}

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Strings -> ids (B, context_length) on this tower's device."""
        if self.tokenizer is None:
            raise ValueError("this text tower has no tokenizer (tokenizer='none'): pass token ids, "
                             "e.g. from the HF tokenizer of the checkpoint it was loaded from")
        return self.tokenizer(texts).to(self.token_embedding.weight.device)

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, width) after the final LayerNorm; position i depends on tokens <= i only."""
        if tokens.ndim != 2 or tokens.dtype.is_floating_point:
            raise ValueError(f"the text tower expects integer token ids (B, L), "
                             f"got {tokens.dtype} {tuple(tokens.shape)}")
        L = tokens.shape[1]
        if L > self.cfg.context_length:
            raise ValueError(f"{L} tokens exceed the text tower's context_length {self.cfg.context_length}: "
                             f"truncate them (ByteTokenizer(context_length={self.cfg.context_length}))")
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # (B, L, width)
        mask = self.attn_mask[:L, :L].to(x.dtype)
        for blk in self.blocks:
            x = blk(x, attn_bias=mask)
        return self.norm(x)

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) index of the pooled token: the first ``eot_id`` in each row, or the argmax id (legacy CLIP)."""
        if self.cfg.eot_id is None:
            return tokens.argmax(dim=-1)
        is_eot = tokens == self.cfg.eot_id
        if not bool(is_eot.any(dim=-1).all()):
            raise ValueError(f"every row of token ids must contain the eot token {self.cfg.eot_id} "
                             "(the tokenizer writes it; a truncated row keeps it at the last position)")
        return is_eot.int().argmax(dim=-1)

    def pool(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, width) -> (B, width): the feature at each row's eot token."""
        return x[torch.arange(x.shape[0], device=x.device), self.eot_positions(tokens).to(x.device)]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(tokens), tokens)


def text_transformer(**overrides) -> TextTransformer:
    """A ``TextTransformer`` from ``TextConfig`` fields (unknown fields: a TypeError listing the valid ones)."""
    return TextTransformer(build_from_config(TextConfig, TextConfig(), overrides))
