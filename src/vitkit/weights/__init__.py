"""Interop with the checkpoints people already have: HF transformers, timm, Google's .npz, vitkit.

    vitkit.load_weights(model, "path/to/model.safetensors" | "folder/" | "vit.npz" | "x.pth" | "hf:org/name")
    vitkit.weights.convert("hf-folder/", "out/", to="timm")      # `vitkit convert SRC DST --to ...`
    vitkit.weights.export(model, "out/", to="hf")

One machinery (``mapping``): a table of key rules per format, applied in both directions; ``io``
is the one safe reader (safetensors, ``torch.load(weights_only=True)``, ``np.load(allow_pickle=False)``)
and atomic writer; ``hub`` resolves ``hf:`` ids from the local cache only.
"""
from .convert import TARGETS, convert, export, write_checkpoint
from .io import load_model_state, load_weights_file, save_weights
from .load import Checkpoint, LoadReport, from_checkpoint, infer_vit_config, load_weights, read_checkpoint
from .mapping import FORMATS, KeyMap, Rule, Transform, detect_format, get_format

__all__ = ["load_weights", "from_checkpoint", "LoadReport", "read_checkpoint", "Checkpoint", "infer_vit_config",
           "convert",
           "export", "write_checkpoint", "TARGETS", "load_weights_file", "save_weights", "load_model_state",
           "KeyMap", "Rule", "Transform", "FORMATS", "detect_format", "get_format"]
