"""Tasks: what is learned. Each has `loss(model, batch) -> (loss, metrics)` and `eval_metrics(model, batch)`."""
from .classify import Classify
from .distill import Distill

__all__ = ["Classify", "Distill"]
