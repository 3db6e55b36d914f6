"""Image generation: visual tokenizers (VQ-VAE, VAR multi-scale, HART hybrid), the generators on their
tokens (raster / random-order / masked AR, VAR, HART), their training tasks, and sample metrics."""
from __future__ import annotations

from .ar import ARConfig, ARTransformer
from .hart import HART, HARTConfig, estimate_residual_scale
from .metrics import class_accuracy, classifier_fid, frechet_distance, psnr
from .sampling import cfg_logits, sample_logits, top_k_filter, top_p_filter
from .task import GenerativeModel, GenerativeTask
from .tokenizer import Decoder, Encoder, HybridTokenizer, MultiScaleVQTokenizer, VQTokenizer, default_scales
from .tokenizer_task import TokenizerTask
from .var import VAR, VARConfig
from .vq import MultiScaleVQ, Phi, PhiPartiallyShared, VectorQuantizer, code_stats

__all__ = ["VectorQuantizer", "MultiScaleVQ", "Phi", "PhiPartiallyShared", "code_stats", "Encoder", "Decoder",
           "VQTokenizer", "MultiScaleVQTokenizer", "HybridTokenizer", "default_scales", "TokenizerTask",
           "ARConfig", "ARTransformer", "VAR", "VARConfig", "HART", "HARTConfig", "estimate_residual_scale",
           "cfg_logits", "sample_logits", "top_k_filter", "top_p_filter", "GenerativeModel", "GenerativeTask",
           "classifier_fid", "class_accuracy", "frechet_distance", "psnr"]
