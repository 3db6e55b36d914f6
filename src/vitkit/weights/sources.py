"""Default pretrained sources: registered name -> a hub repository, its layout, and where that is documented.

    model = vitkit.create_model("vit_base_patch16_224", pretrained=True)      # the default source
    model = vitkit.create_model("vit_small_patch14_dinov2", pretrained=True, img_size=224)
    mae = load_pretrained("mae_vit_base_patch16"); clip = load_pretrained("clip_vit_base_patch32")
    download("deit_small_distilled_patch16_224") / download("hf:org/name")   # prefetch into the HF cache
    pretrained_names()                                                       # what has a default source

Every repository id below, its file layout and its config were checked against a published listing
(cited per entry): the HF model pages (config.json, file tree), timm's ``default_cfgs`` (a
``hf_hub_id='timm/'`` entry means the repository ``timm/<model>.<tag>``), and transformers'
conversion scripts. Key names: for transformers-layout repositories they are what transformers'
classes write for that config (``save_pretrained``); for timm repositories they are timm's module
names (``timm/models/vision_transformer.py`` ``VisionTransformer``; ``deit.py``
``VisionTransformerDistilled`` adds ``dist_token`` and ``head_dist``; ``efficientvit_mit.py``
``EfficientVit``; ``convit.py`` ``ConVit``). tests/weights/test_sources.py serves a random file with
those names for every ViT entry through a stand-in hub; test_pvt_hf.py, test_efficientvit_timm.py and
test_convit_timm.py do so for PVT, EfficientViT and ConViT.

Where a port computes another function than the authors' code, the entry's ``overrides`` build the
port's (the one the file was checked with), and the model family's docstring says what differs:
- PVT (transformers' ``PvtModel``): one ``layer_norm_eps`` (1e-6) for every LayerNorm, where whai362/PVT
  leaves the patch-embedding and spatial-reduction norms at 1e-5: ``conv_norm_eps=1e-6``.
- EfficientViT (timm's ``LiteMLA``): the linear attention's denominator eps is 1e-5, mit-han-lab's
  1e-15: ``attn_eps=1e-5``.

No revision is pinned in the table (the published ``main``); the commit a download resolved to is
recorded in ``model.pretrained_cfg.revision`` and ``hf:org/name@<commit>`` loads exactly those bytes.

Families left out, and why:
- EfficientViT-L (timm ``efficientvit_l*``): another architecture (GELU, fused MBConvs), not in vitkit;
  timm's ``r256``/``r288`` EfficientViT-B files are the same models fine-tuned at other sizes (the
  defaults are the ``r224`` ones).
- PVT v2 (timm ``pvt_v2_*``, ``OpenGVLab/pvt_v2_*``): not in vitkit (overlapping patch embeddings,
  convolutional FFN).
- T2T-ViT, CeiT, LocalViT, SparseViT, visual tokens: no weights on the hub in a layout vitkit reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hub

KINDS = ("model", "mae", "clip")


@dataclass(frozen=True)
class Source:
    name: str                       # a registered model (kind "model") or a task-level name (mae / clip)
    repo: str                       # hub repository id
    format: str                     # the layout its weights have (weights.mapping FORMATS name, or "hf-clip")
    citation: str                   # where the repository and its layout are documented
    revision: str | None = None     # a pinned commit, if any
    kind: str = "model"             # "model": create_model; "mae": load_hf_mae; "clip": load_clip
    overrides: dict[str, Any] = field(default_factory=dict)  # config fields the checkpoint needs

    @property
    def hub_id(self) -> str:
        return f"hf:{self.repo}" + (f"@{self.revision}" if self.revision else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "repo": self.repo, "revision": self.revision, "format": self.format,
                "kind": self.kind, "overrides": dict(self.overrides), "citation": self.citation}


_HF = "https://huggingface.co/"
_TIMM_VIT = ("timm/models/vision_transformer.py default_cfgs['{tag}'] (hf_hub_id='timm/'); "
             "VisionTransformer module names; listing " + _HF + "timm/{tag}/tree/main")
_TIMM_DEIT = ("timm/models/deit.py default_cfgs['{tag}'] (hf_hub_id='timm/'; VisionTransformerDistilled: "
              "dist_token, head_dist)")
_SWIN = ("transformers convert_swin_timm_to_pytorch.py get_swin_config ({size}); config.json "
         + _HF + "microsoft/swin-{size}-patch4-window7-224 (layer_norm_eps 1e-05, SwinForImageClassification)")
_DINO = ("transformers convert_dinov2{reg}_to_hf.py (image_size 518, patch 14, {size} sizes); config.json "
         + _HF + "facebook/dinov2-{tag}/blob/main/config.json")
_PVT = ("transformers models/pvt/convert_pvt_to_pytorch.py convert_pvt_checkpoint (pvt_size '{size}': "
        "'Zetatech/pvt-{size}-224'; create_rename_keys + read_in_k_v: the PvtForImageClassification names, "
        "kv split into key, value), tests/models/pvt/test_modeling_pvt.py (from_pretrained('Zetatech/pvt-tiny-224')); "
        "sizes: whai362/PVT classification/pvt.py pvt_{size} (depths {depths}); modeling_pvt.py: one "
        "layer_norm_eps (PvtConfig: 1e-6) for every LayerNorm; " + _HF + "Zetatech/pvt-{size}-224")
_TIMM_EFFICIENTVIT = ("timm/models/efficientvit_mit.py default_cfgs['{tag}'] (hf_hub_id='timm/'; crop_pct 0.95); "
                      "EfficientVit module names (build_model_with_cfg, no filter); LiteMLA eps 1e-5; listing "
                      + _HF + "timm/{tag}/tree/main")
_TIMM_CONVIT = ("timm/models/convit.py default_cfgs['{tag}'] (hf_hub_id='timm/'); ConVit module names "
                "(build_model_with_cfg, no filter: GPSA attn.qk + attn.v, bare pos_embed); listing "
                + _HF + "timm/{tag}/tree/main")


def _timm_vit(name: str, tag: str, **overrides) -> Source:
    return Source(name, f"timm/{tag}", "timm", _TIMM_VIT.format(tag=tag), overrides=overrides)


def _timm_deit(name: str) -> Source:
    tag = f"{name}.fb_in1k"
    return Source(name, f"timm/{tag}", "timm", _TIMM_DEIT.format(tag=tag) + f"; {_HF}timm/{tag}")


SOURCES: dict[str, Source] = {s.name: s for s in [
    # ViT (Dosovitskiy et al.): How to train your ViT (augreg) in21k -> in1k, timm's port; ViT-B/16 from
    # Google's own HF repository; ViT-H/14 only exists as the in21k original (no classifier).
    _timm_vit("vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
    _timm_vit("vit_small_patch16_224", "vit_small_patch16_224.augreg_in21k_ft_in1k"),
    Source("vit_base_patch16_224", "google/vit-base-patch16-224", "hf",
           _HF + "google/vit-base-patch16-224 (ViTForImageClassification, 1000 ImageNet labels; "
           "preprocessor_config.json: size 224, mean/std 0.5)"),
    _timm_vit("vit_large_patch16_224", "vit_large_patch16_224.augreg_in21k_ft_in1k"),
    _timm_vit("vit_huge_patch14_224", "vit_huge_patch14_224.orig_in21k", num_classes=0),
    # DeiT (Touvron et al.): the authors' weights in timm's layout, the distilled ones with dist_token/head_dist
    *[_timm_deit(f"deit_{size}_{d}patch16_224") for size in ("tiny", "small", "base") for d in ("", "distilled_")],
    # Swin (Liu et al.): Microsoft's HF repositories
    *[Source(f"swin_{size}_patch4_window7_224", f"microsoft/swin-{size}-patch4-window7-224", "hf-swin",
             _SWIN.format(size=size)) for size in ("tiny", "small", "base")],
    # DINOv2 (Oquab et al.) and with registers (Darcet et al.): Meta's HF repositories, no head
    *[Source(f"vit_{size}_patch14_{'reg4_' if reg else ''}dinov2",
             f"facebook/dinov2-{'with-registers-' if reg else ''}{size}", "hf-dinov2",
             _DINO.format(reg="_with_registers" if reg else "", size=size,
                          tag=("with-registers-" if reg else "") + size))
      for size in ("small", "base") for reg in (False, True)],
    # PVT (Wang et al.): the authors' weights converted by transformers (PvtForImageClassification); the
    # port's single LayerNorm eps for every norm (conv_norm_eps: PVT's own code has 1e-5 there)
    *[Source(f"pvt_{size}", f"Zetatech/pvt-{size}-224", "hf-pvt", _PVT.format(size=size, depths=depths),
             overrides={"conv_norm_eps": 1e-6})
      for size, depths in (("tiny", "2, 2, 2, 2"), ("small", "3, 4, 6, 3"), ("medium", "3, 4, 18, 3"),
                           ("large", "3, 8, 27, 3"))],
    # EfficientViT (Cai et al.): mit-han-lab's weights in timm's port (its attention eps, 1e-5)
    *[Source(f"efficientvit_{b}", f"timm/efficientvit_{b}.r224_in1k", "timm-efficientvit",
             _TIMM_EFFICIENTVIT.format(tag=f"efficientvit_{b}.r224_in1k"), overrides={"attn_eps": 1e-5})
      for b in ("b0", "b1", "b2", "b3")],
    # ConViT (d'Ascoli et al.): facebookresearch/convit's weights in timm's port
    *[Source(f"convit_{size}", f"timm/convit_{size}.fb_in1k", "timm-convit",
             _TIMM_CONVIT.format(tag=f"convit_{size}.fb_in1k")) for size in ("tiny", "small", "base")],
    # task-level models: MAE (encoder + decoder) and CLIP (both towers)
    Source("mae_vit_base_patch16", "facebook/vit-mae-base", "hf", _HF + "facebook/vit-mae-base (ViTMAEForPreTraining: "
           "hidden 768, 12 layers, decoder 512 x 8 layers, 16 heads, mask_ratio 0.75)", kind="mae"),
    Source("clip_vit_base_patch32", "openai/clip-vit-base-patch32", "hf-clip",
           _HF + "openai/clip-vit-base-patch32 (CLIPModel; tokenizer.json, vocab.json, merges.txt; "
           "transformers CLIPConfig defaults: ViT-B/32 vision, 512-wide text, projection 512)", kind="clip"),
]}


def pretrained_names(kind: str | None = None) -> list[str]:
    """Names with a default source (``kind``: only "model", "mae" or "clip")."""
    return sorted(n for n, s in SOURCES.items() if kind is None or s.kind == kind)


def default_source(name: str) -> Source:
    """The default source of a name, or a ValueError naming the ones that have one."""
    if name not in SOURCES:
        raise ValueError(f"{name} has no default pretrained source; ones that do: {', '.join(pretrained_names())} "
                         f"(or pass pretrained='hf:org/name', a folder or a file)")
    return SOURCES[name]


def resolve_pretrained(name: str | None, pretrained: Any) -> Any:
    """What ``create_model(name, pretrained=...)`` loads: True -> the name's default source (an hf: id);
    anything else is returned as is (a path, ``hf:org/name``). False / None -> None."""
    if pretrained is True:
        src = default_source(name)
        if src.kind != "model":
            raise ValueError(f"{name} is a {src.kind.upper()} model: load it with "
                             f"vitkit.weights.sources.load_pretrained({name!r})")
        return src.hub_id
    if pretrained is False:
        return None
    return pretrained


def download(name_or_id: str) -> Path:
    """Prefetch a default source (by name) or ``hf:org/name[@rev]`` into the HF cache; the snapshot folder."""
    spec = name_or_id if hub.is_hub_id(name_or_id) else default_source(name_or_id).hub_id
    return hub.resolve(spec)


def load_pretrained(name: str, **overrides):
    """Any default source by name: a registered model (as ``create_model(name, pretrained=True)``), the MAE
    (``tasks.mae.MAE`` with its decoder) or CLIP (``tasks.clip.CLIP`` with its tokenizer)."""
    src = default_source(name)
    if src.kind == "model":
        from ..models.registry import create_model
        return create_model(name, pretrained=True, **overrides)
    folder = hub.resolve(src.hub_id)
    if src.kind == "mae":
        from .mae import load_hf_mae
        model = load_hf_mae(folder, **overrides)
    else:
        from .clip import load_clip
        model = load_clip(folder, **overrides)
    from .io import read_json
    from .pretrained_cfg import from_checkpoint_files
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    commit = hub.snapshot_commit(folder)
    model.pretrained_cfg = from_checkpoint_files(folder, config, f"hf:{src.repo}@{commit}" if commit else
                                                 src.hub_id, src.format, repo=src.repo, revision=commit,
                                                 architecture=name, citation=src.citation)
    return model


def describe() -> list[dict[str, Any]]:
    """The table, JSON-ready (for ``vitkit models --pretrained``)."""
    return [SOURCES[n].to_dict() for n in pretrained_names()]
