"""Tasks: what is learned. Each has `loss(model, batch) -> (loss, metrics)` and `eval_metrics(model, batch)`."""
from .classify import Classify
from .distill import Distill
from .mae import MAE, MAEPretrain
from .pretrained import LinearProbe, backbone_state_dict

__all__ = ["Classify", "Distill", "MAE", "MAEPretrain", "LinearProbe", "backbone_state_dict"]
