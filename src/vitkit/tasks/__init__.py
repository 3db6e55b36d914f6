"""Tasks: what is learned. Each has `loss(model, batch) -> (loss, metrics)` and `eval_metrics(model, batch)`."""
from .classify import Classify

__all__ = ["Classify"]
