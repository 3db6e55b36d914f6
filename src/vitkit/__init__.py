"""vitkit: the Vision Transformer and the methods built on it."""
from .models import create_model, list_models, register_model
from .weights import load_weights
from .weights.clip import load_clip

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "register_model", "load_weights", "load_clip", "__version__"]
