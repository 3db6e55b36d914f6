"""Image generation: visual tokenizers (VQ-VAE, VAR multi-scale, HART hybrid) and their training task."""
from __future__ import annotations

from .tokenizer import Decoder, Encoder, HybridTokenizer, MultiScaleVQTokenizer, VQTokenizer, default_scales
from .tokenizer_task import TokenizerTask
from .vq import MultiScaleVQ, Phi, PhiPartiallyShared, VectorQuantizer, code_stats

__all__ = ["VectorQuantizer", "MultiScaleVQ", "Phi", "PhiPartiallyShared", "code_stats", "Encoder", "Decoder",
           "VQTokenizer", "MultiScaleVQTokenizer", "HybridTokenizer", "default_scales", "TokenizerTask"]
