"""Patch diversification (Gong et al. 2021, "Vision Transformers with Patch Diversification").

Deep ViTs tend to map the patches of an image to similar tokens ("over-smoothing"). The paper adds
three losses on the patch tokens to classification; h^[l] = (h_1^[l], ..., h_n^[l]) are the n patch
tokens (class / distillation tokens left out) after layer l, L the last layer:

    patch-wise cosine loss       L_cos = 1/(n(n-1)) sum_{i != j} |h_i^T h_j| / (||h_i|| ||h_j||),  h = h^[L]
    patch-wise contrastive loss  L_con = -1/n sum_i log( exp(h_i^[1]T h_i^[L]) / sum_j exp(h_i^[1]T h_j^[L]) ),
                                 with the gradient stopped on h^[1]
    patch-wise mixing loss       L_mix = 1/n sum_i CE(g(h_i^[L]), y_i)  on a CutMix-ed image, g a linear
                                 classifier shared by all patches, y_i the label of the image patch i
                                 was cut from

and trains on  CE(class logits, target) + w_cos L_cos + w_con L_con + w_mix L_mix  (batch means).

Which hidden states, as the official code (ChengyueGongR/PatchVisionTransformer, deit/models.py)
takes them: h^[L] is the last layer's patch tokens AFTER the final norm (``patches = self.norm(x)[:, 1:]``,
which every loss reads), i.e. the patch tokens of ``forward_intermediates(x)["features"]``; h^[1] is the
output of the patch embedding, before the class token and the position embedding are added
(``context_target = self.patch_embed(x).detach()``): the module ``patch_embed`` (T2T-ViT's
``tokens_to_token``) of the backbone. ``first_layer=l`` (an int) anchors on ``hidden_states[l]``
instead (1: the first block's output; 0: block 0's input, position embedding added), without its
leading class / distillation tokens (``patch_tokens``: its last n tokens; ConViT's early layers hold
no class token yet). vitkit scored the tokens before the final norm and anchored on the first block's
output until issue 24.8. The official code's contrastive loss is not the paper's n-way one written
above (a 3-way softmax against the mean of the other patches and of a 7x7 neighbourhood), its mixing
loss classifies the mean token of each pasted region, and it has no cosine loss; vitkit keeps the
paper's three losses.

The mixing loss needs per-patch labels, which pixel CutMix does not give (a box edge may cut a
patch in two). ``patch_cutmix`` therefore pastes a box aligned to the model's patch grid
(``grid_size``), so every patch comes whole from one image; the class token's target is the usual
CutMix soft target, weighted by the exact area each image keeps. It needs a backbone whose tokens
are its patches in raster order (ViT and its hybrid, DeiT, CeiT, ConViT, T2T-ViT, the axial and local
ViTs); VT's semantic tokens (no ``grid_size``, no patch embedding) can use the cosine loss and the
contrastive loss anchored on a block (``first_layer=1``) only. A
distilled DeiT trains on the average of its two heads (no teacher here, as ``Classify``). Pyramids
(PVT, Swin, SparseViT, EfficientViT) are not supported: their ``forward_intermediates`` gives stages
of changing length and width, not every block's ``hidden_states``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ..layers.init import init_transformer_
from .classify import Classify, soft_targets

EMBEDDINGS = ("patch_embed", "tokens_to_token")  # the backbone module whose output is h^[1] (first_layer="embed")


# ---------------------------------------------------------------------------- the three losses
def patch_cosine_loss(h: torch.Tensor) -> torch.Tensor:
    """L_cos = 1/(n(n-1)) sum_{i != j} |cos(h_i, h_j)|, averaged over the batch.

    h: patch tokens (B, n, D), n >= 2. 1 when every patch is the same vector, 0 when they are orthogonal.
    """
    if h.ndim != 3 or h.shape[1] < 2:
        raise ValueError(f"patch_cosine_loss needs tokens (B, n, D) with n >= 2, got shape {tuple(h.shape)}")
    n = h.shape[1]
    u = F.normalize(h.float(), dim=-1)
    sim = (u @ u.transpose(1, 2)).abs()                                # (B, n, n), |cos|, diagonal = 1
    off_diag = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)
    return (off_diag / (n * (n - 1))).mean()


def patch_contrastive_loss(h_first: torch.Tensor, h_last: torch.Tensor) -> torch.Tensor:
    """L_con = -1/n sum_i log softmax_j(h_i^[1]T h_j^[L])[i], averaged over the batch; no gradient to h^[1].

    h_first, h_last: patch tokens (B, n, D) of the first and the last layer. Each last-layer patch is
    pulled towards its own first-layer token and pushed from the other patches' (raw inner products,
    no normalisation or temperature, as in the paper).
    """
    if h_first.shape != h_last.shape or h_last.ndim != 3:
        raise ValueError(f"patch_contrastive_loss needs two (B, n, D) tensors of one shape, got "
                         f"{tuple(h_first.shape)} and {tuple(h_last.shape)}")
    logits = h_first.detach().float() @ h_last.float().transpose(1, 2)   # (B, n, n): [i, j] = h_i^[1]T h_j^[L]
    target = torch.arange(h_last.shape[1], device=h_last.device).expand(h_last.shape[0], -1)
    return F.cross_entropy(logits.transpose(1, 2), target)               # classes on dim 1; mean over B, n


def patch_mixing_loss(patch_logits: torch.Tensor, patch_labels: torch.Tensor) -> torch.Tensor:
    """L_mix = 1/n sum_i CE(g(h_i^[L]), y_i), averaged over the batch.

    patch_logits: g applied to every patch token, (B, n, K); patch_labels: y_i, (B, n) int64.
    """
    if patch_logits.shape[:2] != patch_labels.shape or patch_logits.ndim != 3:
        raise ValueError(f"patch_mixing_loss needs logits (B, n, K) and labels (B, n), got "
                         f"{tuple(patch_logits.shape)} and {tuple(patch_labels.shape)}")
    return F.cross_entropy(patch_logits.float().transpose(1, 2), patch_labels)


def patch_cutmix(images: torch.Tensor, grid_size: tuple[int, int], alpha: float = 1.0,
                 lam: float | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix with a box on the patch grid: sample i gets a box of patches from sample B-1-i (the flip).

    images: (B, C, H, W) with H, W divisible by the grid. lam ~ Beta(alpha, alpha) (or given) sets the box
    to cover about 1 - lam of the patches. Returns (mixed images, mask (gh, gw) bool: True where the
    patch comes from the flipped batch, lam_kept: the exact fraction of patches each image keeps).
    """
    B, _, H, W = images.shape
    gh, gw = grid_size
    if H % gh or W % gw:
        raise ValueError(f"image size {H}x{W} is not a whole number of {gh}x{gw} patches")
    if lam is None:
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
    cut = math.sqrt(1.0 - lam)
    ch, cw = round(gh * cut), round(gw * cut)
    cy, cx = int(torch.randint(gh, ())), int(torch.randint(gw, ()))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, gh)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, gw)
    mask = torch.zeros(gh, gw, dtype=torch.bool, device=images.device)
    mask[y0:y1, x0:x1] = True
    pixels = mask.repeat_interleave(H // gh, 0).repeat_interleave(W // gw, 1)   # (H, W)
    mixed = torch.where(pixels, images.flip(0), images)
    return mixed, mask, 1.0 - float(mask.sum()) / (gh * gw)


def patch_tokens(h: torch.Tensor, num_patches: int) -> torch.Tensor:
    """h^[l]: the last ``num_patches`` tokens of one hidden state (B, T, D), the leading class /
    distillation tokens dropped. Counted from the end because the prefix is not in every layer:
    ConViT's class token joins only after its GPSA blocks, whose hidden states hold the patches alone."""
    if h.ndim != 3 or h.shape[1] < num_patches:
        raise ValueError(f"a hidden state of shape {tuple(h.shape)} does not hold {num_patches} patch tokens")
    return h[:, h.shape[1] - num_patches:]


def patch_labels(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """y_i for every patch in raster order: labels (B,) and a ``patch_cutmix`` mask (gh, gw) -> (B, gh*gw)."""
    m = mask.flatten()[None]                                               # (1, n)
    return torch.where(m, labels.flip(0)[:, None], labels[:, None])


# ---------------------------------------------------------------------------- the trained module
class PatchDiversified(nn.Module):
    """What the trainer optimises: the ``backbone`` and the mixing loss's shared patch classifier g.

    ``forward(x)`` gives the backbone's logits (evaluation, prediction, checkpoints are a classifier's).
    ``forward(x, intermediates=True)`` gives, from ONE pass through ``backbone.forward_intermediates``,
    a dict: "logits" (B, K) (``forward_head`` of the normed features, what ``backbone(x)`` returns),
    "hidden_states" (the backbone's list, (B, h, w, D) token maps flattened to (B, h*w, D) in raster
    order), "patch_tokens" h^[L] (B, n, D) (the normed features without the class / distillation
    tokens), "embedding" h^[1] (B, n, D) (the output of ``patch_embed`` / ``tokens_to_token``, caught
    by a forward hook; absent when the backbone has neither), and "patch_logits" g(h_i^[L]) (B, n, K)
    when there is a g. The diversity losses go through this forward, so under DDP (which wraps this
    module) every gradient, g's included, is synchronised as for any forward.

    A distilled DeiT is switched to one output, the average of its two heads (``set_distilled_training(False)``,
    as ``train.tasks.build_classify`` does): there is no teacher here, and the class-token loss needs
    one (B, K) tensor.
    """

    def __init__(self, backbone: nn.Module, patch_head: bool = True):
        super().__init__()
        for need in ("forward_intermediates", "forward_head", "num_classes", "num_features"):
            if not hasattr(backbone, need):
                raise ValueError(f"DiversePatch needs a vitkit backbone with `{need}`; "
                                 f"{type(backbone).__name__} has none")
        if patch_head and backbone.num_classes <= 0:
            raise ValueError("the mixing loss's patch classifier needs a backbone with a classifier "
                             "(num_classes > 0)")
        if getattr(backbone, "head_dist", None) is not None:
            backbone.set_distilled_training(False)                          # DeiT: logits = (cls + dist) / 2
        self.backbone = backbone
        self.num_prefix_tokens = getattr(backbone, "num_prefix_tokens", 0)
        self.grid_size = getattr(backbone, "grid_size", None)
        self.input_size = getattr(backbone, "input_size", None)
        self.num_classes = backbone.num_classes
        self.patch_head = Linear(backbone.num_features, backbone.num_classes) if patch_head else None
        if self.patch_head is not None:
            init_transformer_(self.patch_head)                               # truncated normal 0.02, zero bias
        self.embedding = next((m for m in (getattr(backbone, a, None) for a in EMBEDDINGS)
                               if isinstance(m, nn.Module)), None)

    def no_weight_decay(self) -> set[str]:
        skip = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else set()
        return {f"backbone.{n}" for n in skip}

    def forward(self, x: torch.Tensor, intermediates: bool = False):
        if not intermediates:
            return self.backbone(x)
        caught = []
        hook = (self.embedding.register_forward_hook(lambda _m, _i, o: caught.append(o))
                if self.embedding is not None else None)
        try:
            inter = self.backbone.forward_intermediates(x)
        finally:
            if hook is not None:
                hook.remove()
        if "hidden_states" not in inter:
            raise ValueError(f"DiversePatch needs every block's tokens (`hidden_states`); "
                             f"{type(self.backbone).__name__}'s forward_intermediates gives {sorted(inter)} "
                             "(a pyramid's stages change length and width)")
        flat = lambda h: h.flatten(1, 2) if h.ndim == 4 else h  # noqa: E731  (B, h, w, D) maps -> (B, h*w, D)
        feats = inter["features"]
        out = {"logits": self.backbone.forward_head(feats), "hidden_states": [flat(h) for h in inter["hidden_states"]],
               "patch_tokens": flat(feats)[:, self.num_prefix_tokens:]}
        if caught and torch.is_tensor(caught[0]) and caught[0].ndim == 3:
            out["embedding"] = caught[0]
        if self.patch_head is not None:
            out["patch_logits"] = self.patch_head(out["patch_tokens"])
        return out


# ---------------------------------------------------------------------------- the task
class DiversePatch:
    """Classification plus the patch diversity losses; wraps ``Classify`` (labels, targets, evaluation).

    cos_weight, contrastive_weight, mixing_weight: w_cos, w_con, w_mix (0 = that loss is off). The
                 defaults are ours, measured with the tokens before the final norm and h^[1] the first
                 block's output (vitkit's choice before issue 24.8): on the 8x8 digits (vit_nano_patch2_8,
                 12 epochs) w_cos = 1 alone raised held-out accuracy (96.9% vs 85.5%, seed 2), while
                 w_con = 1 lowered it (62% vs 90%, seed 0; the raw inner products of L_con grew with the
                 unnormalised token norms), and w_con = 0.1 did not. With the official h's (now) w_con = 1
                 trains: 10 epochs of a 2-block vit_nano_patch2_8 (w_cos = w_mix = 1, mix_prob 0.5, seeds
                 0, 1) reach 94.2 / 93.6% at w_con = 1 and 95.5 / 94.7% at 0.1, where the previous h's gave
                 23.7 / 12.0% and 91.4 / 93.3%. The official code weighs its losses 1; 0.1 is kept.
    first_layer: h^[1]: "embed" (default, the official code's): the output of the backbone's patch
                 embedding (``patch_embed``, T2T-ViT's ``tokens_to_token``), before the position
                 embedding; an int l: ``hidden_states[l]`` (1: the first block's output). A backbone with
                 neither module (VT) needs an int.
    mix_alpha:   Beta(alpha, alpha) of the patch-grid CutMix applied to training batches.
    mix_prob:    the probability that a training batch is patch-CutMixed (ours, as timm's Mixup ``prob``);
                 default 1 (every batch) when the mixing loss is on (it needs mixed images), else 0. An
                 unmixed batch (and every batch in eval mode) gives each patch its image's label. mix_prob > 0
                 with every weight 0 is the ViT with the patch CutMix alone (the class token's soft target),
                 the arm that separates the CutMix from the losses; mixing_weight > 0 with mix_prob = 0 is the
                 losses without CutMix (L_mix then classifies every patch as its image).
    label_smoothing, mixup, cutmix, num_classes: as ``Classify``, for the class-token cross-entropy;
                 Classify's own mixup / cutmix cannot be combined with the patch CutMix or the mixing loss
                 (mixed pixels have no per-patch label), so they must be 0 then.

    The model passed to ``loss`` / ``eval_metrics`` is a ``PatchDiversified`` (``wrap(backbone)``
    builds the right one), or the DDP module around it.
    """

    main_metric = Classify.main_metric

    def __init__(self, cos_weight: float = 1.0, contrastive_weight: float = 0.1, mixing_weight: float = 1.0,
                 first_layer: int | str = "embed", mix_alpha: float = 1.0, mix_prob: float | None = None,
                 label_smoothing: float = 0.0, mixup: float = 0.0, cutmix: float = 0.0, num_classes: int | None = None):
        for name, w in (("cos_weight", cos_weight), ("contrastive_weight", contrastive_weight),
                        ("mixing_weight", mixing_weight)):
            if w < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {w}")
        if mix_prob is None:
            mix_prob = 1.0 if mixing_weight > 0 else 0.0
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        if (mixing_weight > 0 or mix_prob > 0) and (mixup > 0 or cutmix > 0):
            raise ValueError("the mixing loss and the patch CutMix mix images on the patch grid itself (mix_alpha); "
                             "set mixup=0 and cutmix=0, or mixing_weight=0 and mix_prob=0 to use Classify's mixing")
        if mix_alpha <= 0:
            raise ValueError(f"mix_alpha must be > 0, got {mix_alpha}")
        if first_layer != "embed" and (isinstance(first_layer, bool) or not isinstance(first_layer, int)
                                       or first_layer < 0):
            raise ValueError(f"first_layer must be 'embed' or a hidden_states index >= 0, got {first_layer!r}")
        self.cos_weight, self.contrastive_weight = float(cos_weight), float(contrastive_weight)
        self.mixing_weight, self.mix_alpha, self.first_layer = float(mixing_weight), float(mix_alpha), first_layer
        self.mix_prob = float(mix_prob)
        self.classify = Classify(label_smoothing, mixup, cutmix, num_classes)

    def __repr__(self) -> str:
        return (f"DiversePatch(cos_weight={self.cos_weight}, contrastive_weight={self.contrastive_weight}, "
                f"mixing_weight={self.mixing_weight}, first_layer={self.first_layer}, "
                f"mix_alpha={self.mix_alpha}, mix_prob={self.mix_prob}, {self.classify!r})")

    def wrap(self, backbone: nn.Module) -> PatchDiversified:
        """The module to train: ``backbone`` plus g when the mixing loss is on."""
        wrapped = PatchDiversified(backbone, patch_head=self.mixing_weight > 0)
        if self.mixing_weight > 0 or self.mix_prob > 0:
            self._grid(wrapped)
        return wrapped

    # ---- training ------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Metrics: "loss", "loss_ce", "loss_cos" / "loss_contrastive" / "loss_mixing" for the losses that
        are on, "patch_cos" (L_cos of the last layer, always: the paper's over-smoothing measure), and
        "acc" (class head, top-1) when the batch was not mixed."""
        images, labels = Classify._unpack(batch)
        inner = self._inner(model)
        c = self.classify
        patch_mix = self.mixing_weight > 0
        mask, lam = None, None
        if self.mix_prob > 0 and model.training and (self.mix_prob == 1.0 or bool(torch.rand(()) < self.mix_prob)):
            images, mask, lam = patch_cutmix(images, self._grid(inner), self.mix_alpha)
        elif model.training and (c.mixup > 0 or c.cutmix > 0):
            images, lam = c.mix_images(images)
        out = model(images, intermediates=True)
        logits = out["logits"]
        k = c._check_logits(logits, labels)
        target = labels if lam is None else soft_targets(labels, k, lam)
        ce = F.cross_entropy(logits.float(), target, label_smoothing=c.label_smoothing)
        hidden = out["hidden_states"]
        if self.first_layer != "embed" and not -len(hidden) <= self.first_layer < len(hidden):
            raise ValueError(f"first_layer={self.first_layer} but the backbone gives {len(hidden)} hidden states")
        h_last = out["patch_tokens"]                                       # after the final norm, as the official code
        metrics = {"loss_ce": ce.detach()}
        loss = ce
        cos = patch_cosine_loss(h_last)
        metrics["patch_cos"] = cos.detach()
        if self.cos_weight > 0:
            loss = loss + self.cos_weight * cos
            metrics["loss_cos"] = cos.detach()
        if self.contrastive_weight > 0:
            con = patch_contrastive_loss(self._first(out, h_last.shape[1]), h_last)
            loss = loss + self.contrastive_weight * con
            metrics["loss_contrastive"] = con.detach()
        if patch_mix:
            if "patch_logits" not in out:
                raise ValueError("mixing_weight > 0 needs the patch classifier: build the model with "
                                 "task.wrap(backbone)")
            n = h_last.shape[1]
            if mask is not None and mask.numel() != n:
                raise ValueError(f"the backbone gives {n} patch tokens but its grid_size {tuple(mask.shape)} has "
                                 f"{mask.numel()} patches; the mixing loss needs one token per patch")
            y = patch_labels(labels, mask) if mask is not None else labels[:, None].expand(-1, n)
            mix = patch_mixing_loss(out["patch_logits"], y)
            loss = loss + self.mixing_weight * mix
            metrics["loss_mixing"] = mix.detach()
        metrics["loss"] = loss.detach()
        if lam is None:
            metrics["acc"] = (logits.detach().argmax(-1) == labels).float().mean()
        return loss, metrics

    # ---- evaluation (the classifier's) -----------------------------------------------------------
    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """As ``Classify``: sums of cross-entropy and top-1 of ``model(images)`` (the backbone's logits)."""
        return self.classify.eval_metrics(model, batch)

    summarize = staticmethod(Classify.summarize)

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.classify.predict(model, images)

    def _first(self, out: dict, n: int) -> torch.Tensor:
        """h^[1] (B, n, D): the patch embedding's output, or ``hidden_states[first_layer]``'s patch tokens."""
        if self.first_layer != "embed":
            return patch_tokens(out["hidden_states"][self.first_layer], n)
        if "embedding" not in out:
            raise ValueError(f"first_layer='embed' anchors the contrastive loss on the (B, n, D) output of the "
                             f"backbone's {' or '.join(EMBEDDINGS)}, which it does not have: set first_layer to a "
                             "hidden_states index (1: the first block's output)")
        h = out["embedding"]
        if h.shape[1] != n:
            raise ValueError(f"the patch embedding gives {h.shape[1]} tokens but the last layer {n} patch tokens")
        return h

    # ---- checks --------------------------------------------------------------------------------
    @staticmethod
    def _inner(model: nn.Module) -> PatchDiversified:
        inner = getattr(model, "module", model)                          # the module inside DDP
        if not isinstance(inner, PatchDiversified):
            raise ValueError(f"DiversePatch trains a PatchDiversified module, got {type(inner).__name__}; "
                             "build it with task.wrap(backbone)")
        return inner

    @staticmethod
    def _grid(inner: PatchDiversified) -> tuple[int, int]:
        if inner.grid_size is None:
            raise ValueError(f"the mixing loss needs a backbone whose tokens are its patches on a grid (`grid_size`); "
                             f"{type(inner.backbone).__name__} has none: set mixing_weight=0")
        return tuple(inner.grid_size)
