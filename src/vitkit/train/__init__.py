"""The generic trainer: config, optimizer, schedule, checkpoints, distributed helpers, EMA, fit/evaluate."""
from .checkpoint import load_model_state, load_run_weights, load_weights_file
from .config import TrainConfig
from .ema import ModelEMA
from .optim import build_optimizer, param_groups
from .schedule import lr_at
from .trainer import NonFiniteLossError, evaluate, fit

__all__ = ["TrainConfig", "fit", "evaluate", "NonFiniteLossError", "ModelEMA", "param_groups",
           "build_optimizer", "lr_at", "load_weights_file", "load_model_state", "load_run_weights"]
