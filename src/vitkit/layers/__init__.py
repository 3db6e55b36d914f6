"""Building blocks shared by every vitkit model. They know nothing of data, models or training."""
from .attention import Attention, KVCache, attend
from .block import Block
from .drop import DropPath, drop_path
from .linear import Linear, fast_linear, fast_linear_enabled
from .linear_attention import MultiScaleLinearAttention, relu_linear_attention, relu_quadratic_attention
from .local import AxialAttention, LocalAttention, axial_blocks
from .mlp import Mlp
from .patch_embed import HybridEmbed, PatchEmbed, check_image, to_2tuple
from .pos_embed import (POS_EMBEDS, Learned2dPosEmbed, LearnedPosEmbed, RelativePositionBias,
                        SinCosPosEmbed, relative_position_index, resample_pos_embed, sincos_1d,
                        sincos_2d)
from .reduction import SpatialReductionAttention
from .window import (WindowAttention, cyclic_shift, effective_window, pad_to_multiple, padded_grid, reverse_shift,
                     shift_regions, shift_window_bias, shift_window_mask, window_merge, window_partition)

__all__ = ["Attention", "KVCache", "attend", "Block", "DropPath", "Linear", "fast_linear", "fast_linear_enabled",
           "drop_path", "Mlp", "PatchEmbed", "HybridEmbed",
           "check_image", "to_2tuple", "POS_EMBEDS", "LearnedPosEmbed", "Learned2dPosEmbed",
           "SinCosPosEmbed", "RelativePositionBias", "relative_position_index",
           "resample_pos_embed", "sincos_1d", "sincos_2d", "WindowAttention", "cyclic_shift",
           "effective_window", "pad_to_multiple", "padded_grid", "reverse_shift", "shift_regions", "shift_window_bias",
           "shift_window_mask", "window_merge", "window_partition", "MultiScaleLinearAttention",
           "relu_linear_attention", "relu_quadratic_attention", "AxialAttention", "LocalAttention",
           "axial_blocks", "SpatialReductionAttention"]
