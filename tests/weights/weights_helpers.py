"""Helpers for the interop tests: tiny random HF models, parameter jitter."""
import torch


def jitter_(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter, so zero biases and unit norms cannot hide a misplaced tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def hf_vit(transformers, *, image_size=32, patch_size=4, num_channels=3, num_labels=10, hidden_size=32,
           depth=2, heads=4, cls=None, seed=0, **kw):
    """A random-init HF ViT (``ViTForImageClassification`` unless ``cls`` says otherwise), jittered, eval."""
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(hidden_size=hidden_size, num_hidden_layers=depth, num_attention_heads=heads,
                                 intermediate_size=2 * hidden_size, image_size=image_size, patch_size=patch_size,
                                 num_channels=num_channels, num_labels=num_labels, **kw)
    cls = cls or transformers.ViTForImageClassification
    return jitter_(cls(cfg), seed=seed).eval()
