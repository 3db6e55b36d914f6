"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision").

An image tower and a text tower, each followed by a linear projection (no bias) into one embedding
space, L2-normalised, compared by cosine similarity times a learned temperature (Fig. 3):

    I_e = l2norm(I_f W_i),  T_e = l2norm(T_f W_t)                   (B, E) each
    logits = I_e T_e^T * exp(t),  t learned, init ln(1 / 0.07), clipped so exp(t) <= 100 (Sec. 2.5;
                                  open_clip clips the parameter into [0, ln 100], see ``CLIP.forward``)
    loss = (CE(logits, arange(B)) + CE(logits^T, arange(B))) / 2     symmetric InfoNCE

Zero-shot classification (Sec. 3.1.4) embeds one caption per class and picks the nearest; *prompt
ensembling* (Sec. 3.1.4, and OpenAI's zero-shot notebook) averages over templates:
``w_k = l2norm(mean_t l2norm(T_e("template_t(class_k)")))``, ``p(k | x) = softmax_k(exp(t) I_e . w_k)``.

The method names are open_clip's: ``encode_image``, ``encode_text``, ``forward(image, text) ->
(image_features, text_features, logit_scale.exp())`` (features normalised). The image tower is any
vitkit classifier kept under ``backbone`` (pooled by ``forward_head(forward_features(x), pre_logits=True)``);
the text tower is ``vitkit.models.text.TextTransformer`` or the locked pretrained tower of
``vitkit.tasks.locked_text`` (LiT). ``CLIPTask`` trains it on labelled images (the trainer's protocol),
turning every label into a caption from a random template.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ..models.registry import create_model
from ..models.text import TextConfig, TextTransformer

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP Sec. 2.5: temperature initialised to 0.07
LOGIT_SCALE_MAX = math.log(100.0)      # "clipped to prevent scaling the logits by more than 100"
DEFAULT_TEMPLATES = ("a photo of a {}.",)  # the CLIP notebook's baseline prompt


# ---------------------------------------------------------------------------- the model
class CLIP(nn.Module):
    """Image tower ``backbone`` + text tower ``text`` + ``visual_projection`` / ``text_projection`` + ``logit_scale``.

    ``text`` maps its own input (token ids, or strings for a locked tower) to pooled features
    (B, text.width) and has ``tokenize(list[str])``. ``templates``: the prompts ``zero_shot_predict``
    uses by default (saved with the model's config).
    """

    def __init__(self, backbone: nn.Module, text: nn.Module, embed_dim: int = 64,
                 init_logit_scale: float = LOGIT_SCALE_INIT, max_logit_scale: float = LOGIT_SCALE_MAX,
                 templates: Sequence[str] | None = None, backbone_name: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.text = text
        self.embed_dim = embed_dim
        self.image_width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.visual_projection = Linear(self.image_width, embed_dim, bias=False)
        self.text_projection = Linear(text.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = float(max_logit_scale)
        self.templates = tuple(templates) if templates else None
        self.backbone_name = backbone_name
        # projections at std width^-0.5, as open_clip: unit-variance inputs give unit-variance outputs
        nn.init.normal_(self.visual_projection.weight, std=self.image_width ** -0.5)
        nn.init.normal_(self.text_projection.weight, std=text.width ** -0.5)

    @property
    def input_size(self) -> tuple[int, ...]:
        """(C, H, W) the image tower takes."""
        return tuple(getattr(self.backbone, "input_size", ()))

    def no_weight_decay(self) -> set[str]:
        """The towers' own no-decay names, prefixed (logit_scale is a scalar: no decay by the ndim rule)."""
        out = set()
        for prefix, tower in (("backbone.", self.backbone), ("text.", self.text)):
            if hasattr(tower, "no_weight_decay"):
                out |= {prefix + n for n in tower.no_weight_decay()}
        return out

    def tokenize(self, texts: Sequence[str]):
        """Strings -> what the text tower reads (ids (B, L) for a TextTransformer)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.text.tokenize(list(texts))

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, E): pooled image features projected (and L2-normalised with ``normalize``)."""
        feats = self.backbone.forward_head(self.backbone.forward_features(image), pre_logits=True)
        x = self.visual_projection(feats)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, text, normalize: bool = False) -> torch.Tensor:
        """Token ids (B, L) or a list of B strings -> (B, E), projected (and L2-normalised with ``normalize``)."""
        if not isinstance(text, torch.Tensor):
            text = self.tokenize(text)
        x = self.text_projection(self.text(text))
        return F.normalize(x, dim=-1) if normalize else x

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clip the parameter t itself into [0, max_logit_scale] (ln 100): open_clip's rule, which its
        train loop applies after every optimizer step (``logit_scale.clamp_(0, math.log(100))``)."""
        self.logit_scale.clamp_(0.0, self.max_logit_scale)

    def scale(self) -> torch.Tensor:
        """exp(t), t clipped into [0, ln 100] on the fly (evaluation, a loaded t past the cap)."""
        return self.logit_scale.clamp(0.0, self.max_logit_scale).exp()

    def forward(self, image: torch.Tensor | None = None, text=None):
        """-> (image_features (B, E) or None, text_features (T, E) or None, exp(logit_scale)).

        Features are L2-normalised; a tower whose input is None is skipped (open_clip's convention).
        A training forward (grad enabled) first clips t in place (``clamp_logit_scale_``): every forward
        sees the t open_clip's clip-after-step gives, and t, inside the range, always has a gradient (a
        clip in the graph alone would zero it for good once an update took t past ln 100)."""
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.training and torch.is_grad_enabled():
            self.clamp_logit_scale_()
            return image_features, text_features, self.logit_scale.exp()   # exp saves its output, not t
        return image_features, text_features, self.scale()

    def config_dict(self) -> dict[str, Any]:
        """What ``build_clip`` needs to rebuild this model (JSON-ready): see ``vitkit.weights.clip.load_clip``."""
        cfg = getattr(self.backbone, "cfg", None)
        if not dataclasses.is_dataclass(cfg):
            raise ValueError(f"the image tower {type(self.backbone).__name__} has no dataclass .cfg to save")
        vision = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "name"}
        return {"embed_dim": self.embed_dim, "vision_model": self.backbone_name, "vision_config": vision,
                "text": self.text.config_dict(), "max_logit_scale": self.max_logit_scale,
                "templates": list(self.templates) if self.templates else None}


def build_text_tower(spec: TextConfig | dict | str) -> nn.Module:
    """A ``TextConfig`` (or its dict, ``kind="transformer"``) -> TextTransformer; ``"locked"`` or
    ``{"kind": "locked", ...}`` -> the frozen pretrained MiniLM of ``vitkit.tasks.locked_text``."""
    if isinstance(spec, TextConfig):
        return TextTransformer(spec)
    if spec == "locked" or (isinstance(spec, dict) and spec.get("kind") == "locked"):
        from .locked_text import LockedTextTower
        args = {k: v for k, v in spec.items() if k != "kind"} if isinstance(spec, dict) else {}
        return LockedTextTower(**args)
    if isinstance(spec, dict) and spec.get("kind", "transformer") == "transformer":
        return TextTransformer(TextConfig(**{k: v for k, v in spec.items() if k != "kind"}))
    raise ValueError(f"unknown text tower {spec!r}: give a TextConfig, its dict, or 'locked'")


def make_clip(image_model: str, *, text: TextConfig | dict | str | None = None, embed_dim: int = 64,
              templates: Sequence[str] | None = None, image_args: dict | None = None) -> CLIP:
    """A CLIP whose image tower is the registered ``image_model`` without its head (``num_classes=0``).

    ``text``: a TextConfig (default ``TextConfig()``: bytes, width 128, depth 4), or ``"locked"`` (LiT).
    ``embed_dim``: the joint embedding's width. ``image_args``: the image tower's config overrides,
    e.g. ``{"in_chans": 1, "img_size": 28}``. ``templates``: zero-shot prompts saved with the model.
    """
    backbone = create_model(image_model, **{"num_classes": 0, **(image_args or {})})
    return CLIP(backbone, build_text_tower(text if text is not None else TextConfig()), embed_dim,
                templates=templates, backbone_name=image_model)


def build_clip(config: dict[str, Any]) -> CLIP:
    """Rebuild a CLIP from ``CLIP.config_dict()`` (weights not loaded)."""
    try:
        name, vision = config.get("vision_model"), dict(config["vision_config"])
        text, embed_dim = config["text"], int(config["embed_dim"])
    except KeyError as e:
        raise ValueError(f"a CLIP config needs embed_dim, vision_config and text; {e} is missing") from None
    if name:
        backbone = create_model(name, **vision)
    else:  # an HF CLIP vision tower: a plain ViT
        from ..models.vit import ViTConfig, VisionTransformer
        backbone = VisionTransformer(ViTConfig(**vision))
    return CLIP(backbone, build_text_tower(text), embed_dim,
                max_logit_scale=config.get("max_logit_scale", LOGIT_SCALE_MAX),
                templates=config.get("templates"), backbone_name=name)


# ---------------------------------------------------------------------------- the loss
def gather_features(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Under torch.distributed, every rank's features concatenated in rank order (B * world, E); the
    local slice keeps its gradient, the others are constants (open_clip's ``gather_with_grad=False``).
    Unchanged in a single process. Every rank must hold the same batch size."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return image_features, text_features
    world, rank = dist.get_world_size(), dist.get_rank()

    def gather(t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.detach().contiguous())
        parts[rank] = t
        return torch.cat(parts)

    return gather(image_features), gather(text_features)


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
              gather: bool = True) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP Fig. 3): ``(CE(s I T^T, arange) + CE(s T I^T, arange)) / 2``.

    image_features, text_features: (B, E), L2-normalised, row i of each a matching pair; logit_scale:
    exp(t). With ``gather`` the batch is every rank's (see ``gather_features``).
    """
    if image_features.shape != text_features.shape:
        raise ValueError(f"image and text features must pair up row by row, got {tuple(image_features.shape)} "
                         f"and {tuple(text_features.shape)}")
    if gather:
        image_features, text_features = gather_features(image_features, text_features)
    logits_per_image = logit_scale * image_features.float() @ text_features.float().t()   # (B, B)
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels)) / 2


# ---------------------------------------------------------------------------- captions and prompts
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Training captions; a random one (and a random name: numeral or word) per image and step.
DIGIT_TEMPLATES = ("a handwritten {}.", "the digit {}.", "a photo of the number {}.", "{}",
                   "the number {}.", "an image of the digit {}.", "a {} written by hand.",
                   "a scan of a handwritten {}.", "a white {} on black.", "a drawing of a {}.")
# Held out from training: zero-shot evaluation only (disjoint from DIGIT_TEMPLATES; a test checks).
DIGIT_EVAL_TEMPLATES = ("a picture of the digit {}.", "this is a {}.", "number {}, handwritten.")
# For datasets whose classes are not digits.
GENERIC_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.", "{}",
                     "a close-up photo of a {}.", "a drawing of a {}.", "a small {}.")
GENERIC_EVAL_TEMPLATES = ("a photograph showing a {}.", "this is a {}.", "a low resolution photo of the {}.")


def digit_classnames() -> list[list[str]]:
    """``[["0", "zero"], ["1", "one"], ...]``: each digit's names, numeral and word."""
    return [[str(i), w] for i, w in enumerate(DIGIT_WORDS)]


def _names(classnames: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Every class as a non-empty list of names (a str is one name)."""
    out = [[c] if isinstance(c, str) else list(c) for c in classnames]
    if not out or any(not names or not all(isinstance(n, str) and n for n in names) for names in out):
        raise ValueError("classnames must be a non-empty list of names (or of lists of synonyms), none empty")
    return out


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str) or not templates:
        raise ValueError("templates must be a non-empty list of strings such as 'a photo of a {}.'")
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise ValueError(f"every template needs exactly one '{{}}' where the class name goes; bad: {bad}")
    return tuple(templates)


def class_prompts(classnames: Sequence[str | Sequence[str]],
                  templates: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Every (template, name) prompt of every class, and its class index: (prompts, owner (P,) int64)."""
    templates = _check_templates(templates)
    prompts, owner = [], []
    for k, names in enumerate(_names(classnames)):
        for name in names:
            for t in templates:
                prompts.append(t.format(name))
                owner.append(k)
    return prompts, torch.tensor(owner)


def ensemble_prompts(text_features: torch.Tensor, owner: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Prompt ensembling: ``w_k = l2norm(mean_{p of class k} l2norm(f_p))``. (P, E) -> (E, K), the notebook's layout."""
    f = F.normalize(text_features.float(), dim=-1)
    owner = owner.to(f.device)
    sums = f.new_zeros(num_classes, f.shape[1]).index_add_(0, owner, f)
    counts = torch.bincount(owner, minlength=num_classes).clamp(min=1).to(f)
    return F.normalize(sums / counts[:, None], dim=-1).t()


@torch.no_grad()
def zero_shot_weights(model: CLIP, classnames: Sequence[str | Sequence[str]], templates: Sequence[str],
                      tokenizer=None) -> torch.Tensor:
    """The zero-shot classifier (E, K): one prompt-ensembled text embedding per class (CLIP notebook).

    ``classnames``: one name per class, or a list of synonyms per class (all are averaged);
    ``tokenizer``: strings -> the text tower's input (default: the model's own).
    """
    prompts, owner = class_prompts(classnames, templates)
    text = tokenizer(prompts) if tokenizer is not None else prompts
    if isinstance(text, torch.Tensor):
        text = text.to(model.logit_scale.device)
    return ensemble_prompts(model.encode_text(text), owner, len(_names(classnames)))


@torch.no_grad()
def zero_shot_classify(model: CLIP, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Logits (B, K) = exp(t) * l2norm(image embedding) @ weights; ``weights`` from ``zero_shot_weights``."""
    image = model.encode_image(images, normalize=True).float()
    return model.scale().float() * image @ weights.to(image.device)


@torch.no_grad()
def zero_shot_predict(model: CLIP, images: torch.Tensor, labels: str | Sequence[str],
                      templates: Sequence[str] | None = None) -> torch.Tensor:
    """Class probabilities (B, K) for ``labels`` (a list, or one comma-separated string "cat,dog").

    ``images``: (B, C, H, W), normalised as the model was trained. ``templates``: default the model's
    own (``model.templates``, saved by training) or ``("a photo of a {}.",)``. Runs in eval mode.
    """
    if isinstance(labels, str):
        labels = [s.strip() for s in labels.split(",")]
    labels = [s for s in labels if s]
    if len(labels) < 2:
        raise ValueError(f"zero-shot needs at least two labels to choose from, got {labels}")
    templates = templates or model.templates or DEFAULT_TEMPLATES
    was_training = model.training
    model.eval()
    try:
        weights = zero_shot_weights(model, labels, templates)
        return zero_shot_classify(model, images.to(model.logit_scale.device), weights).softmax(-1)
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- the task
class CLIPTask:
    """Contrastive image-caption training on labelled images, for ``vitkit.train.fit``.

    Batches are ``(images (B, C, H, W), labels (B,))``. In ``loss`` every label becomes a caption: a
    random training template filled with a random name of its class (torch's global RNG, reseeded by
    the trainer). ``eval_metrics``: the contrastive loss on captions from the held-out templates, and
    zero-shot top-1 with the prompt-ensembled held-out templates (``main_metric``). The model is a
    ``CLIP`` (through ``model(images, captions)`` only, so DDP synchronises gradients).
    """

    main_metric = ("zero_shot_acc", "max")

    def __init__(self, classnames: Sequence[str | Sequence[str]], templates: Sequence[str] = DIGIT_TEMPLATES,
                 eval_templates: Sequence[str] = DIGIT_EVAL_TEMPLATES):
        self.classnames = _names(classnames)
        self.templates = _check_templates(templates)
        self.eval_templates = _check_templates(eval_templates)
        shared = set(self.templates) & set(self.eval_templates)
        if shared:
            raise ValueError(f"held-out templates must not be training templates; both have {sorted(shared)}")
        self.prompts, self.owner = class_prompts(self.classnames, self.eval_templates)

    @classmethod
    def for_classes(cls, classes: Sequence[str]) -> CLIPTask:
        """Digit names and templates when the classes are "0".."9" (mnist5k, digits), else generic ones."""
        if [str(c) for c in classes] == [str(i) for i in range(10)]:
            return cls(digit_classnames(), DIGIT_TEMPLATES, DIGIT_EVAL_TEMPLATES)
        return cls(list(classes), GENERIC_TEMPLATES, GENERIC_EVAL_TEMPLATES)

    def __repr__(self) -> str:
        return (f"CLIPTask({len(self.classnames)} classes, {len(self.templates)} templates, "
                f"{len(self.eval_templates)} held-out)")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def captions(self, labels: torch.Tensor, train: bool = True) -> list[str]:
        """One caption per label: random template and name (``train``), or held-out ones in turn."""
        labels = labels.tolist()
        if train:
            t = torch.randint(len(self.templates), (len(labels),)).tolist()
            n = torch.randint(1 << 30, (len(labels),)).tolist()
            return [self.templates[ti].format(self.classnames[y][ni % len(self.classnames[y])])
                    for y, ti, ni in zip(labels, t, n)]
        T = len(self.eval_templates)
        return [self.eval_templates[i % T].format(self.classnames[y][(i // T) % len(self.classnames[y])])
                for i, y in enumerate(labels)]

    def _unpack(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            images, labels = batch
        except (TypeError, ValueError):
            raise ValueError("CLIPTask expects batches (images, labels)") from None
        if labels.ndim != 1 or labels.dtype.is_floating_point or images.shape[0] != labels.shape[0]:
            raise ValueError(f"labels must be (B,) class indices for B={images.shape[0]} images, "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}) (the task's classnames), "
                             f"got {int(labels.min())}..{int(labels.max())}")
        return images, labels

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Symmetric InfoNCE on (image, caption) pairs. Metrics: loss, scale = exp(t), and i2t_acc: the
        fraction of images whose most similar caption in the batch names the same class."""
        images, labels = self._unpack(batch)
        image_f, text_f, scale = model(images, self.captions(labels, train=True))
        loss = clip_loss(image_f, text_f, scale)
        with torch.no_grad():
            nearest = (image_f @ text_f.t()).argmax(dim=1)
            i2t = (labels[nearest.to(labels.device)] == labels).float().mean()
        return loss, {"loss": loss.detach(), "scale": scale.detach(), "i2t_acc": i2t}

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Sums: loss_sum (contrastive loss on held-out captions, x B), zero_shot_correct, count."""
        images, labels = self._unpack(batch)
        captions = self.captions(labels, train=False)
        image_f, text_f, scale = model(images, captions + self.prompts)  # one forward: captions, then prompts
        B = len(captions)
        loss = clip_loss(image_f, text_f[:B], scale, gather=False)
        weights = ensemble_prompts(text_f[B:], self.owner, self.num_classes)          # (E, K)
        pred = (image_f.float() @ weights).argmax(dim=1)
        return {"loss_sum": loss * B, "zero_shot_correct": (pred.to(labels.device) == labels).sum(), "count": B}

    @staticmethod
    def summarize(totals: dict[str, float]) -> dict[str, float]:
        n = totals["count"]
        return {"loss": totals["loss_sum"] / n, "zero_shot_acc": totals["zero_shot_correct"] / n}

    def meta(self) -> dict[str, Any]:
        """For the run's config.json: the class names and templates of this task."""
        return {"classnames": self.classnames, "templates": list(self.templates),
                "eval_templates": list(self.eval_templates)}
