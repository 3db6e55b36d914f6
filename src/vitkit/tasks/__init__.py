"""Tasks: what is learned. Each has `loss(model, batch) -> (loss, metrics)` and `eval_metrics(model, batch)`."""
from .classify import Classify
from .clip import CLIP, CLIPTask
from .contrastive import Contrastive, MoCoV3, SimCLR, TwoViews
from .distill import Distill
from .diverse_patch import DiversePatch, PatchDiversified
from .mae import MAE, MAEPretrain
from .pretrained import LinearProbe, backbone_state_dict

__all__ = ["Classify", "CLIP", "CLIPTask", "Contrastive", "MoCoV3", "SimCLR", "TwoViews", "Distill", "DiversePatch", "PatchDiversified", "MAE", "MAEPretrain", "LinearProbe", "backbone_state_dict"]
