"""Model families, one file each, all built from ``vitkit.layers`` and registered by name."""
from . import resnet, swin, vit  # noqa: F401  (registers the families)
from . import sparsevit  # noqa: F401
from . import efficientvit  # noqa: F401
from . import pvt  # noqa: F401
from . import convit  # noqa: F401
from . import t2t  # noqa: F401
from . import ceit  # noqa: F401
from . import visual_tokens  # noqa: F401
from . import local_vit  # noqa: F401
from .ceit import CeiT, CeiTConfig
from .convit import ConViT, ConViTConfig
from .efficientvit import EfficientViT, EfficientViTConfig
from .local_vit import LocalViT, LocalViTConfig
from .pvt import PVTConfig, PyramidVisionTransformer
from .registry import create_model, is_model, list_models, register_model
from .resnet import ResNet, ResNetConfig
from .sparsevit import SparseViT, SparseViTConfig
from .swin import SwinConfig, SwinTransformer
from .t2t import T2TViT, T2TViTConfig
from .vit import ViTConfig, VisionTransformer
from .visual_tokens import VisualTransformer, VTConfig

__all__ = ["create_model", "is_model", "list_models", "register_model", "ResNet", "ResNetConfig",
           "EfficientViT", "EfficientViTConfig", "PVTConfig", "PyramidVisionTransformer",
           "SparseViT", "SparseViTConfig", "ConViT", "ConViTConfig", "SwinConfig", "SwinTransformer", "ViTConfig",
           "VisionTransformer", "T2TViT", "T2TViTConfig", "CeiT", "CeiTConfig", "VisualTransformer", "VTConfig",
           "LocalViT", "LocalViTConfig"]
