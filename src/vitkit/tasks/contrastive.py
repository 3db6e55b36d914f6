"""Contrastive self-supervised learning: SimCLR (Chen et al. 2020) and MoCo v3 (Chen, Xie, He 2021).

Both learn by instance discrimination: two augmented views of one image must embed closer to each
other than to the views of the other images in the (global) batch.

    InfoNCE (MoCo v3, eq. 1):  L_q = -log exp(q . k+ / tau) / sum_{j=1..N} exp(q . k_j / tau)
    NT-Xent (SimCLR, eq. 1):   l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau)   over 2N views

q, k, z are L2-normalised, so the dot products are cosine similarities. Negatives come from every
rank: MoCo's keys (no gradient) are all-gathered; SimCLR's embeddings are all-gathered with their
gradient, so a run on W ranks with n images each gives the loss and gradients of one process with
W*n images. Every torch.distributed call is guarded; single-process everything is local.

Batches are ``(images (B, C, H, W) normalised, labels (B,))``; the labels are ignored (see
``knn_accuracy`` for a label-using probe of the learnt features).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data.transforms import (Compose, Normalize, RandomAffine, RandomGaussianBlur, RandomHorizontalFlip,
                               RandomIntensityJitter, RandomResizedCrop, Transform)
from ..layers import Linear, PatchEmbed


# ---- views --------------------------------------------------------------------------------------
class TwoViews:
    """Two independently augmented views of a batch: ``x1, x2 = views(x, generator=None)``, each (B, C, *size).

    Per view, in order: RandomResizedCrop(size, crop_scale, crop_ratio) -> RandomAffine(translate,
    rotate) -> RandomHorizontalFlip(hflip) -> RandomIntensityJitter(brightness, contrast, jitter_p)
    -> RandomGaussianBlur(blur_sigma, blur_p). The defaults suit 28x28 digits: no flip (a mirrored
    digit is another symbol), crops of at least 40% of the area (smaller ones lose the digit), a
    blur of at most ~1 pixel.

    mean, std: the statistics the batch was normalised with (vitkit loaders: the bundle's). When
    given, the views are made in pixel units ([0, 1]: geometric fill is black, jitter clamps to
    [0, 1]) and normalised again; when None, the batch is augmented as it is (fill 0, no clamping).
    size: output (H, W); None keeps the input size. Randomness: the `generator`, else torch's
    global RNG (which the trainer reseeds every epoch); view 1's parameters are drawn first.
    """

    def __init__(self, size: int | Sequence[int] | None = None, crop_scale: tuple[float, float] = (0.4, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), translate: float = 0.1, rotate: float = 0.0,
                 brightness: float = 0.4, contrast: float = 0.4, jitter_p: float = 0.8,
                 blur_sigma: tuple[float, float] = (0.1, 1.0), blur_p: float = 0.5, hflip: float = 0.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the batch's normalisation), or neither")
        self.size = size
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.crop = (crop_scale, crop_ratio)
        steps: list[Transform] = []
        if translate or rotate:
            steps.append(RandomAffine(rotate=rotate, translate=translate))
        if hflip:
            steps.append(RandomHorizontalFlip(hflip))
        if jitter_p and (brightness or contrast):
            steps.append(RandomIntensityJitter(brightness, contrast, jitter_p,
                                               clamp=(0.0, 1.0) if mean is not None else None))
        if blur_p:
            steps.append(RandomGaussianBlur(blur_sigma, blur_p))
        self._after_crop = steps
        if self.mean is not None:
            self._to_pixels = Normalize([-m / s for m, s in zip(self.mean, self.std)], [1 / s for s in self.std])
            self._normalize = Normalize(self.mean, self.std)

    def view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One augmented view: (B, C, H, W) -> (B, C, *size)."""
        size = tuple(x.shape[-2:]) if self.size is None else self.size
        steps = [RandomResizedCrop(size, *self.crop), *self._after_crop]
        if self.mean is not None:
            steps = [self._to_pixels, *steps, self._normalize]
        return Compose(steps)(x, generator=generator)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(x, generator), self.view(x, generator)

    def __repr__(self) -> str:
        return (f"TwoViews(size={self.size}, crop={self.crop}, steps={self._after_crop}, "
                f"mean={self.mean}, std={self.std})")


# ---- distributed helpers -----------------------------------------------------------------------
def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_equal_sizes(x: torch.Tensor, world: int) -> None:
    """all_gather needs the same batch on every rank: say so instead of hanging or failing obscurely."""
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    if len({int(s) for s in sizes}) > 1:
        raise ValueError(f"contrastive negatives are gathered across ranks, which needs the same batch size on "
                         f"every rank; got {[int(s) for s in sizes]} (use drop_last or a padded loader)")


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each of W ranks -> (W*n, ...), rank-major, no gradient (MoCo's concat_all_gather)."""
    _, world = _rank_world()
    if world == 1:
        return x
    _check_equal_sizes(x, world)
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's rows (a reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # d(sum_r L_r) / d(all rows)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each of W ranks -> (W*n, ...), rank-major; gradients flow back to the rank that owns each row.

    Rank r's backward receives sum_s dL_s/dx_r, so with DDP's gradient averaging every rank ends with
    the gradient of mean_s L_s, the loss of the whole global batch.
    """
    _, world = _rank_world()
    if world == 1:
        return x
    _check_equal_sizes(x, world)
    return _AllGatherWithGrad.apply(x)


# ---- losses ---------------------------------------------------------------------------------------
def info_nce_logits(q: torch.Tensor, k: torch.Tensor, tau: float,
                    distributed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE logits and targets: q (n, d), k (n, d) -> logits (n, W*n) = q k_all^T / tau, labels (n,).

    q and k are L2-normalised here. With `distributed` and a process group, k is gathered from every
    rank (rank-major), so query i of rank r has its positive at column r*n + i and W*n - 1 negatives;
    the gather carries gradient only when k requires it (MoCo's momentum keys do not).
    """
    if q.shape != k.shape or q.ndim != 2:
        raise ValueError(f"q and k must both be (n, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    q, k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
    rank, world = _rank_world() if distributed else (0, 1)
    if world > 1:
        k = all_gather_with_grad(k) if k.requires_grad else all_gather_no_grad(k)
    n = q.shape[0]
    labels = torch.arange(n, device=q.device) + rank * n
    return q @ k.T / tau, labels


def info_nce(q: torch.Tensor, k: torch.Tensor, tau: float = 0.2, distributed: bool = True) -> torch.Tensor:
    """InfoNCE (Oord et al. 2018; MoCo v3 eq. 1), averaged over the n local queries:

        L = 1/n sum_i -log( exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau) ),   j over all W*n keys.

    = cross_entropy(q k^T / tau, positives). q, k: (n, d), L2-normalised inside.
    """
    logits, labels = info_nce_logits(q, k, tau, distributed)
    return F.cross_entropy(logits, labels)


def moco_v3_contrastive_loss(q: torch.Tensor, k: torch.Tensor, tau: float = 0.2,
                             distributed: bool = True) -> torch.Tensor:
    """MoCo v3's ``contrastive_loss(q, k)``: ``CrossEntropy(q k^T / tau, arange + n * rank) * 2 tau``.

    The factor 2 tau (from the official code) makes the gradient scale independent of tau; MoCo v3
    sums it over both directions, ctr(q1, k2) + ctr(q2, k1).
    """
    return info_nce(q, k, tau, distributed) * (2 * tau)


def nt_xent_logits(z1: torch.Tensor, z2: torch.Tensor, tau: float,
                   distributed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's 2N-way logits: z1, z2 (n, d) -> logits (2n, 2N) with -inf on each query's own column, labels (2n,).

    Keys are [Z1; Z2] (2N, d), N = W*n, gathered with gradient from every rank. The local queries
    [z1; z2] sit at key rows idx = r*n + i (view 1) and N + r*n + i (view 2); each one's positive
    is its other view, and its negatives are the other 2N - 2 views.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (n, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    rank, world = _rank_world() if distributed else (0, 1)
    n = z1.shape[0]
    big_n = n * world
    queries = torch.cat([z1, z2])                                          # (2n, d)
    if world > 1:  # one gather of both views: (W*2n, d) -> (W, 2, n, d) -> [Z1; Z2]
        g = all_gather_with_grad(queries).view(world, 2, n, -1)
        keys = torch.cat([g[:, 0].reshape(big_n, -1), g[:, 1].reshape(big_n, -1)])  # (2N, d)
    else:
        keys = queries
    idx = torch.arange(n, device=z1.device) + rank * n
    self_col = torch.cat([idx, idx + big_n])                               # each query's own row in keys
    labels = torch.cat([idx + big_n, idx])                                 # its other view
    logits = queries @ keys.T / tau                                        # (2n, 2N)
    own = F.one_hot(self_col, 2 * big_n).bool()
    return logits.masked_fill(own, float("-inf")), labels


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.2, distributed: bool = True) -> torch.Tensor:
    """NT-Xent (SimCLR eq. 1), averaged over all 2n local views:

        s_ij = z_i . z_j (cosine),  l(i, j) = -log( exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) ),
        L = 1/(2N) sum_k [ l(2k-1, 2k) + l(2k, 2k-1) ],   k over the N images (2N views, all ranks).
    """
    logits, labels = nt_xent_logits(z1, z2, tau, distributed)
    return F.cross_entropy(logits, labels)


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Instance discrimination accuracy: the fraction of queries whose nearest key is their positive."""
    return (logits.detach().argmax(-1) == labels).float().mean()


# ---- heads ----------------------------------------------------------------------------------------
class ProjectionHead(nn.Sequential):
    """An MLP head: (B, in_dim) -> (B, out_dim), `num_layers` Linear layers.

    batch_norm=True (MoCo v3's ``_build_mlp``): Linear(bias=False) -> BN -> ReLU between layers, and
    with last_bn a BatchNorm1d(affine=False) after the last Linear. batch_norm=False (SimCLR v1):
    Linear(bias=True) -> ReLU between layers. Under DDP, BatchNorm1d normalises with each rank's own
    batch statistics unless converted with ``nn.SyncBatchNorm.convert_sync_batchnorm`` (CUDA only).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 batch_norm: bool = True, last_bn: bool = False):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if last_bn and not batch_norm:
            raise ValueError("last_bn needs batch_norm=True")
        layers: list[nn.Module] = []
        for i in range(num_layers):
            d_in = in_dim if i == 0 else hidden_dim
            d_out = out_dim if i == num_layers - 1 else hidden_dim
            layers.append(Linear(d_in, d_out, bias=not batch_norm))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(d_out)] if batch_norm else []
                layers.append(nn.ReLU(inplace=True))
            elif last_bn:
                layers.append(nn.BatchNorm1d(d_out, affine=False))
        super().__init__(*layers)


# ---- backbone plumbing ----------------------------------------------------------------------------
def _prepare_backbone(backbone: nn.Module, feature_dim: int | None) -> int:
    """Remove the classifier (so every trainable weight gets a gradient under DDP) and return the feature width."""
    if hasattr(backbone, "reset_classifier"):
        backbone.reset_classifier(0)
    dim = feature_dim or getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if not dim:
        raise ValueError("cannot tell the backbone's feature width (no head_hidden_size / num_features): "
                         "pass feature_dim=")
    return int(dim)


def stop_grad_patch_projection(backbone: nn.Module) -> list[str]:
    """MoCo v3's ``--stop-grad-conv1`` (vits.py, used by every ViT config): the patch projection keeps its
    random init (vitkit's is MoCo v3's: xavier-uniform over the flattened patch, zero bias), weight and
    bias frozen (requires_grad False), which the paper (Sec. 5.1) found removes the training instability
    (dips in accuracy when the first layer's gradient spikes). As moco-v3, only a conv ``PatchEmbed``
    is frozen (a hybrid CNN stem, a pyramid's per-stage embeddings or a CNN train as before). Returns the
    frozen parameters' names."""
    embed = getattr(backbone, "patch_embed", None)
    if not isinstance(embed, PatchEmbed):
        return []
    embed.proj.requires_grad_(False)
    return [f"patch_embed.proj.{n}" for n, _ in embed.proj.named_parameters()]


def backbone_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> pooled pre-logits features (B, D), through the public vitkit/timm API."""
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


def _no_weight_decay(backbone: nn.Module) -> set[str]:
    names = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
    return {f"backbone.{n}" for n in names}


def _views_of(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None):
    return model.views(x1) if x2 is None else (x1, x2)


# ---- SimCLR -------------------------------------------------------------------------------------
class SimCLR(nn.Module):
    """SimCLR: z = g(f(x)) for two views of every image, NT-Xent over the 2N views of the global batch.

    backbone: any vitkit classifier (its head is removed: ``reset_classifier(0)``); f(x) is
    ``forward_head(forward_features(x), pre_logits=True)``. projector g: default SimCLR v1's
    Linear(D, proj_hidden_dim) -> ReLU -> Linear(proj_hidden_dim, proj_dim) (hidden default D).
    Both views go through the backbone as one batch of 2B.
    forward(x1, x2=None) -> (loss, {"loss", "acc"}): x1 alone is a batch whose views `self.views`
    makes; x1 and x2 are two ready views. Negatives are gathered across ranks in training mode only.
    tau: 0.2 (the paper found 0.1-0.5 depending on batch size; on a 150-step mnist5k run of
    vit_mnist_patch7_28, cosine kNN after pretraining: tau 0.1 61.7%, 0.2 61.0%, 0.5 57.8%).
    """

    def __init__(self, backbone: nn.Module, views: TwoViews | None = None, projector: nn.Module | None = None,
                 proj_hidden_dim: int | None = None, proj_dim: int = 128, tau: float = 0.2,
                 feature_dim: int | None = None):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"temperature tau must be > 0, got {tau}")
        d = _prepare_backbone(backbone, feature_dim)
        self.backbone = backbone
        self.projector = projector if projector is not None else ProjectionHead(
            d, proj_hidden_dim or d, proj_dim, num_layers=2, batch_norm=False)
        self.views = views if views is not None else TwoViews()
        self.tau = float(tau)

    def no_weight_decay(self) -> set[str]:
        return _no_weight_decay(self.backbone)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> projections z (B, proj_dim), not normalised."""
        return self.projector(backbone_features(self.backbone, x))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None):
        x1, x2 = _views_of(self, x1, x2)
        z1, z2 = self.embed(torch.cat([x1, x2])).chunk(2)
        logits, labels = nt_xent_logits(z1, z2, self.tau, distributed=self.training)
        loss = F.cross_entropy(logits, labels)
        return loss, {"loss": loss.detach(), "acc": _top1(logits, labels)}


# ---- MoCo v3 ------------------------------------------------------------------------------------
def moco_momentum(step: int, total_steps: int, m0: float = 0.99) -> float:
    """MoCo v3's cosine momentum schedule: m = 1 - 0.5 (1 + cos(pi k / K)) (1 - m0); m0 at k = 0, 1 at k >= K."""
    k = min(max(int(step), 0), int(total_steps))
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * k / total_steps)) * (1.0 - m0)


class MoCoV3(nn.Module):
    """MoCo v3: a base encoder (backbone -> projector -> predictor) against a momentum encoder (keys).

    backbone: any vitkit classifier (head removed). The default heads are MoCo v3's for a ViT
    (``MoCo_ViT``; the paper: "all layers in both MLPs have BN"): projector a 3-layer MLP
    (D -> hidden -> hidden -> dim), predictor a 2-layer MLP (dim -> hidden -> dim), each Linear
    without bias followed by BN, ReLU between layers, and a BN without affine after the last
    (``_build_mlp(..., last_bn=True)``; only ``MoCo_ResNet``'s predictor ends without it).
    hidden_dim default 4 D (paper: 4096 for ViT-S/B), dim 256 (paper).
    The momentum encoder is ``momentum_backbone`` + ``momentum_projector``, deep copies with
    requires_grad False, updated at the start of every training forward (as MoCo v3's code):
        theta_k <- m theta_k + (1 - m) theta_q,   m = moco_momentum(step, total_steps, m0)
    ``step`` is a persistent buffer counting training forwards (so checkpoints resume it exactly):
    pass total_steps = epochs * steps per epoch (* accumulation steps, which each make a forward).
    Loss: ctr(q1, k2) + ctr(q2, k1), ctr = ``moco_v3_contrastive_loss`` (keys gathered across ranks
    in training mode). forward(x1, x2=None) -> (loss, {"loss", "acc", "m"}) as ``SimCLR``.
    Each view goes through the encoders separately (BN statistics per view, as MoCo v3).
    stop_grad_conv1 (default True, as every ViT config of moco-v3): freeze the backbone's random patch
    projection (``stop_grad_patch_projection``; ``frozen`` names what was frozen). The fixed 2D sin-cos
    position table MoCo v3 also uses is the backbone's choice: build it with ``pos_embed="sincos"``.
    """

    def __init__(self, backbone: nn.Module, total_steps: int, views: TwoViews | None = None,
                 projector: nn.Module | None = None, predictor: nn.Module | None = None,
                 hidden_dim: int | None = None, dim: int = 256, tau: float = 0.2, m0: float = 0.99,
                 feature_dim: int | None = None, stop_grad_conv1: bool = True):
        super().__init__()
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1 (epochs * steps per epoch), got {total_steps}")
        if not 0.0 <= m0 <= 1.0:
            raise ValueError(f"momentum m0 must be in [0, 1], got {m0}")
        if tau <= 0:
            raise ValueError(f"temperature tau must be > 0, got {tau}")
        d = _prepare_backbone(backbone, feature_dim)
        hidden = hidden_dim or 4 * d
        self.frozen = tuple(f"backbone.{n}" for n in stop_grad_patch_projection(backbone)) if stop_grad_conv1 else ()
        self.backbone = backbone
        self.projector = projector if projector is not None else ProjectionHead(
            d, hidden, dim, num_layers=3, batch_norm=True, last_bn=True)
        self.predictor = predictor if predictor is not None else ProjectionHead(
            dim, hidden, dim, num_layers=2, batch_norm=True, last_bn=True)
        self.momentum_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.views = views if views is not None else TwoViews()
        self.total_steps, self.tau, self.m0 = int(total_steps), float(tau), float(m0)

    def no_weight_decay(self) -> set[str]:
        return _no_weight_decay(self.backbone)

    def momentum(self) -> float:
        """This step's momentum m (from the `step` buffer)."""
        return moco_momentum(int(self.step), self.total_steps, self.m0)

    @torch.no_grad()
    def update_momentum_encoder(self, m: float) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q for the backbone and projector parameters."""
        for base, mom in ((self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)):
            for p_q, p_k in zip(base.parameters(), mom.parameters(), strict=True):
                p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> q (B, dim): predictor(projector(backbone(x)))."""
        return self.predictor(self.projector(backbone_features(self.backbone, x)))

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> k (B, dim) from the momentum encoder, no gradient."""
        return self.momentum_projector(backbone_features(self.momentum_backbone, x))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None):
        x1, x2 = _views_of(self, x1, x2)
        q1, q2 = self.query(x1), self.query(x2)
        m = self.momentum()
        if self.training:
            self.update_momentum_encoder(m)
            self.step.add_(1)
        k1, k2 = self.key(x1), self.key(x2)
        logits12, labels = info_nce_logits(q1, k2, self.tau, distributed=self.training)
        logits21, _ = info_nce_logits(q2, k1, self.tau, distributed=self.training)
        scale = 2 * self.tau  # moco_v3_contrastive_loss, both directions
        loss = scale * (F.cross_entropy(logits12, labels) + F.cross_entropy(logits21, labels))
        acc = (_top1(logits12, labels) + _top1(logits21, labels)) / 2
        return loss, {"loss": loss.detach(), "acc": acc, "m": torch.tensor(m)}


# ---- the task -----------------------------------------------------------------------------------
class Contrastive:
    """The trainer task for ``SimCLR`` / ``MoCoV3``: any module with ``views`` and forward(x1, x2=None) -> (loss, metrics).

    loss(model, batch): ``model(images)`` (the model makes its random views; DDP-safe).
    eval_metrics: the same loss with deterministic views (a generator seeded with `eval_seed` for
    every batch), local negatives only (per rank under DDP, so the value depends on the eval batch
    size), and "acc": instance-discrimination top-1, the fraction of queries whose positive key is
    the nearest. MoCo's momentum encoder is not updated in eval mode.
    """

    main_metric = ("loss", "min")

    def __init__(self, eval_seed: int = 0):
        self.eval_seed = int(eval_seed)

    def __repr__(self) -> str:
        return f"Contrastive(eval_seed={self.eval_seed})"

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model(self._images(batch))

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Sums over the batch: "loss_sum", "acc_sum", and "count"."""
        images = self._images(batch)
        inner = getattr(model, "module", model)  # DDP -> the wrapped module, which holds `views`
        x1, x2 = inner.views(images, generator=torch.Generator().manual_seed(self.eval_seed))
        loss, metrics = model(x1, x2)
        b = images.shape[0]
        return {"loss_sum": loss.detach().float() * b, "acc_sum": metrics["acc"].float() * b, "count": b}

    @staticmethod
    def _images(batch) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError("Contrastive expects batches (images (B, C, H, W), labels) or an image tensor")
        if images.shape[0] < 2:
            raise ValueError("contrastive learning needs at least 2 images per batch (the negatives), "
                             f"got {images.shape[0]}")
        return images


# ---- a label probe of the features --------------------------------------------------------------
@torch.no_grad()
def extract_features(backbone: nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised pooled features (N, D) and labels (N,) of every batch of `loader`, in eval mode."""
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for images, y in loader:
            feats.append(F.normalize(backbone_features(backbone, images.to(device)).float(), dim=-1).cpu())
            labels.append(y.cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_accuracy(backbone: nn.Module, train_loader, test_loader, k: int = 20, temperature: float = 0.07,
                 chunk: int = 1024) -> float:
    """Weighted cosine kNN top-1 (Wu et al. 2018, as DINO's eval_knn) of the backbone's pooled features.

    Each test image takes its k nearest train features by cosine similarity s; class c scores
    sum over those neighbours of class c of exp(s / temperature); the prediction is the top class.
    Single-process (run it on rank 0); the loaders should not augment.
    """
    train_x, train_y = extract_features(backbone, train_loader)
    test_x, test_y = extract_features(backbone, test_loader)
    k = min(k, train_x.shape[0])
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for lo in range(0, test_x.shape[0], chunk):
        sim, idx = (test_x[lo:lo + chunk] @ train_x.T).topk(k, dim=-1)            # (b, k)
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        correct += int((votes.argmax(-1) == test_y[lo:lo + chunk]).sum())
    return correct / test_x.shape[0]
