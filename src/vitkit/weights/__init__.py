"""Interop with the checkpoints people already have: HF transformers, timm, Google's .npz, vitkit.

    vitkit.load_weights(model, "path/to/model.safetensors" | "folder/" | "vit.npz" | "x.pth" | "hf:org/name")
    vitkit.weights.convert("hf-folder/", "out/", to="timm")      # `vitkit convert SRC DST --to ...`
    vitkit.weights.export(model, "out/", to="hf")

One machinery (``mapping``): a table of key rules per format, applied in both directions; ``io``
is the one safe reader (safetensors, ``torch.load(weights_only=True)``, ``np.load(allow_pickle=False)``)
and atomic writer; ``hub`` resolves ``hf:org/name[@rev]`` through huggingface_hub (downloaded into the
HF cache unless HF_HUB_OFFLINE=1); ``sources`` holds each registered model's default pretrained source
(``create_model(name, pretrained=True)``); ``pretrained_cfg.PretrainedCfg`` is what a checkpoint says
about its preprocessing and labels (``model.pretrained_cfg``).
"""
from .convert import TARGETS, convert, export, write_checkpoint
from .io import load_model_state, load_weights_file, save_weights
from .load import Checkpoint, LoadReport, from_checkpoint, infer_vit_config, load_weights, read_checkpoint
from .mapping import FORMATS, KeyMap, Rule, Transform, detect_format, get_format
from .pretrained_cfg import PretrainedCfg
from .sources import SOURCES, default_source, download, load_pretrained, pretrained_names

__all__ = ["load_weights", "from_checkpoint", "LoadReport", "read_checkpoint", "Checkpoint", "infer_vit_config",
           "convert",
           "export", "write_checkpoint", "TARGETS", "load_weights_file", "save_weights", "load_model_state",
           "KeyMap", "Rule", "Transform", "FORMATS", "detect_format", "get_format",
           "PretrainedCfg", "SOURCES", "default_source", "download", "load_pretrained", "pretrained_names"]
