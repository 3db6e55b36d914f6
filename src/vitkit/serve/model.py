"""The model behind the server: loaded once, preprocessed one way, run on batches of requests.

    served = load_served("runs/demo")             # a run folder (classifier or CLIP)
    served = load_served("hf:google/vit-base-patch16-224", amp="auto")   # or a checkpoint folder
    x = served.preprocess(decode_image(body, served.input_size[0]))      # (C, H, W), what the model takes
    results = served.run([Job(x, "classify"), Job(x2, "embed")])         # one forward pass per kind of job

`input_transform` is the one place that says how an image becomes the model's input: for a run folder
the run's own ``Run.input_transform()``, which `vitkit predict` calls too, so the server's
probabilities equal predict's. `ServedModel.run` takes the jobs the batcher gathered
and answers each: a list as long as ``jobs``, each a dict of tensors or the exception its group raised.
"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

OPS = ("classify", "embed", "zero-shot")


@dataclass
class Job:
    """One request's share of a batch: its preprocessed image (or how to make it) and what to compute."""
    x: torch.Tensor | None               # (C, H, W), preprocessed; None until ``prepare`` has made it
    op: str = "classify"                 # classify | embed | zero-shot
    labels: tuple[str, ...] = ()         # zero-shot's labels
    rollout: bool = False                # also the attention rollout map
    cancelled: bool = False              # set when the request gave up (timeout): the batch skips it
    prepare: Callable[[], torch.Tensor] | None = field(default=None, repr=False)  # -> x, run by the batcher


def set_thread_torch_threads(n: int) -> None:
    """Give the calling thread ``n`` intra-op (OpenMP) threads, whatever other threads set later.

    With PyTorch's OpenMP backend the count is the thread's own (OpenMP's nthreads ICV), read through
    ``omp_get_max_threads``; ``torch.set_num_threads`` sets it and also a process-wide default that every
    thread reads once, on its first parallel op. `torch.get_num_threads` makes this thread's first read
    happen now; then OpenMP's own ``omp_set_num_threads`` (the library torch loaded) sets this thread's
    count and nothing else, so threads started later keep the process's default. Where that library is
    not found (another backend, another OS), ``torch.set_num_threads``. The server runs its decoding
    threads at 1 (their per-image ops would otherwise fork a second OpenMP team onto the cores the model's
    team uses) and the batcher thread at the server's ``--threads``."""
    if torch.get_num_threads() == n:
        return
    omp_set = _omp_set_num_threads()
    if omp_set is not None:
        omp_set(n)
        if torch.get_num_threads() == n:
            return
    torch.set_num_threads(n)


_OMP: list = []


def _omp_set_num_threads():
    """``omp_set_num_threads`` of the OpenMP runtime loaded in this process (Linux), or None."""
    if not _OMP:
        fn = None
        try:
            import ctypes
            with open("/proc/self/maps") as f:
                paths = [line.split()[-1] for line in f if "libgomp" in line or "libiomp" in line]
            if paths:
                fn = ctypes.CDLL(paths[0]).omp_set_num_threads
                fn.argtypes, fn.restype = [ctypes.c_int], None
        except (OSError, AttributeError, IndexError):
            fn = None
        _OMP.append(fn)
    return _OMP[0]


def input_transform(input_size, mean, std, crop_pct: float | None = None, interpolation: str | None = None,
                    crop_mode: str | None = None, run=None):
    """Images in [0, 1] (1, C, H, W) -> the model's input: THE preprocessing of the server.

    A run folder: the run's own ``Run.input_transform()``, the function `vitkit predict` and the run's test
    loader use (resize, or resize + centre crop for photo runs). Otherwise (a checkpoint, a CLIP):
    `vitkit.data.model_input_transform` with the checkpoint's crop_pct / crop_mode / interpolation where
    it states them."""
    if run is not None and hasattr(run, "input_transform"):
        return run.input_transform()
    from ..data import model_input_transform
    _, h, w = input_size
    extra = {k: v for k, v in (("crop_pct", crop_pct), ("interpolation", interpolation), ("crop_mode", crop_mode))
             if v is not None}
    return model_input_transform((h, w), mean, std, **extra)


@dataclass
class ServedModel:
    name: str                                # what /v1/model calls it (model name, source)
    source: str                              # the run folder / hf id / folder it came from
    kind: str                                # "classifier" | "clip" | "backbone" (features only)
    model: nn.Module
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] | None = None
    amp: torch.dtype | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    crop_mode: str | None = None
    onnx: Any = None                         # an ONNX Runtime session for classify, or None
    onnx_path: str | None = None
    transform: Any = field(default=None, repr=False)   # default: input_transform of the fields above
    _zs_weights: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self):
        if self.transform is None:
            self.transform = input_transform(self.input_size, self.mean, self.std, self.crop_pct,
                                             self.interpolation, self.crop_mode)
        self.model.eval()

    # ---- what it offers
    @property
    def ops(self) -> tuple[str, ...]:
        return {"classifier": ("classify", "embed"), "clip": ("embed", "zero-shot"), "backbone": ("embed",)}[self.kind]

    @property
    def vision(self) -> nn.Module:
        """The image network (the CLIP's image tower, else the model)."""
        return self.model.backbone if self.kind == "clip" else self.model

    @property
    def has_rollout(self) -> bool:
        v = self.vision
        return hasattr(v, "forward_intermediates") and hasattr(v, "num_prefix_tokens") and hasattr(v, "grid_size")

    @property
    def precision(self) -> str:
        from ..train.precision import precision_name
        return "fp32 (ONNX Runtime)" if self.onnx is not None else precision_name(self.amp)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "kind": self.kind, "input_size": list(self.input_size),
                "classes": self.classes, "num_classes": len(self.classes) if self.classes else None,
                "precision": self.precision, "backend": "onnxruntime" if self.onnx is not None else "pytorch",
                "mean": list(self.mean), "std": list(self.std), "endpoints": [f"/v1/{op}" for op in self.ops],
                "rollout": self.has_rollout, "crop_pct": self.crop_pct, "crop_mode": self.crop_mode,
                "num_params": sum(p.numel() for p in self.model.parameters())}

    def warm_up(self) -> None:
        """One tiny batch of every job kind (and a rollout), so the first request does not pay for the
        kernels' first-call set-up."""
        x = torch.zeros(self.input_size)
        labels = ("a", "b") if self.kind == "clip" else ()
        out = self.run([Job(x, op, labels if op == "zero-shot" else (), rollout=True) for op in self.ops])
        for r in out:
            if isinstance(r, BaseException):
                raise r

    # ---- preprocessing
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) in [0, 1] -> (C, h, w) normalised at the model's input size."""
        return self.transform(x[None])[0]

    # ---- a batch
    def _autocast(self):
        from ..train.precision import autocast
        return autocast("cpu", self.amp)

    def run(self, jobs: list[Job]) -> list[dict | BaseException]:
        """Answer every job: one forward pass per kind of job in the batch (+ one for the rollouts)."""
        out: list[dict | BaseException] = [{} for _ in jobs]
        groups: dict[str, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault("image" if self.kind == "clip" else j.op, []).append(i)
        for op, idx in groups.items():
            try:
                x = torch.stack([jobs[i].x for i in idx])
                for i, res in zip(idx, self._forward(op, x, [jobs[i] for i in idx])):
                    out[i].update(res)
            except Exception as e:  # the group fails; the other groups' jobs still get their answers
                for i in idx:
                    out[i] = e
        rolled = [i for i, j in enumerate(jobs) if j.rollout and not isinstance(out[i], BaseException)]
        if rolled and self.has_rollout:
            try:
                maps = self.rollout(torch.stack([jobs[i].x for i in rolled]))
                for i, m in zip(rolled, maps):
                    out[i]["rollout"] = m
            except Exception as e:
                for i in rolled:
                    out[i] = e
        return out

    @torch.inference_mode()
    def _forward(self, op: str, x: torch.Tensor, jobs: list[Job]) -> list[dict]:
        if op == "classify":
            if self.onnx is not None:
                from ..export.onnx import onnx_forward
                logits = onnx_forward(self.onnx, x)
            else:
                with self._autocast():
                    logits = self.model(x)
            probs = logits.float().softmax(-1)
            return [{"probs": p} for p in probs]
        if op == "embed":
            with self._autocast():
                m = self.model
                feats = m.forward_head(m.forward_features(x), pre_logits=True)
            return [{"embedding": f} for f in feats.float()]
        # CLIP: one image encoding for embed and zero-shot jobs alike
        with self._autocast():
            image = self.model.encode_image(x, normalize=True).float()
        scale = self.model.scale().float()
        res = []
        for row, job in zip(image, jobs):
            if job.op == "zero-shot":
                w = self.zero_shot_weights(job.labels).to(row)
                res.append({"probs": (scale * row[None] @ w).softmax(-1)[0]})
            else:
                res.append({"embedding": row})
        return res

    def zero_shot_weights(self, labels: tuple[str, ...]) -> torch.Tensor:
        """The prompt-ensembled text classifier (E, K) of ``labels`` (`vitkit.tasks.clip.zero_shot_weights`),
        cached for the last 64 label sets."""
        w = self._zs_weights.get(labels)
        if w is None:
            from ..tasks.clip import DEFAULT_TEMPLATES, zero_shot_weights
            with self._autocast():
                w = zero_shot_weights(self.model, list(labels), self.model.templates or DEFAULT_TEMPLATES).float()
            self._zs_weights[labels] = w
            while len(self._zs_weights) > 64:
                self._zs_weights.popitem(last=False)
        self._zs_weights.move_to_end(labels)
        return w

    @torch.inference_mode()
    def rollout(self, x: torch.Tensor) -> torch.Tensor:
        """Attention rollout maps (B, gh, gw), each scaled to max 1 (`vitkit.viz.rollout`)."""
        from ..viz.rollout import attention_rollout
        v = self.vision
        with self._autocast():
            attns = v.forward_intermediates(x, return_attention=True)["attentions"]
        maps = attention_rollout([a.float() for a in attns], v.num_prefix_tokens)
        gh, gw = (v.grid_size, v.grid_size) if isinstance(v.grid_size, int) else tuple(v.grid_size)
        return maps.reshape(len(x), gh, gw)


# ---------------------------------------------------------------------------------------- loading
def _is_hf_clip(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") == "clip"
    except (OSError, ValueError):
        return False


def load_served(source: str, amp: str | None = None, onnx: str | None = None, weights: str | None = None,
                threads: int | None = None) -> ServedModel:
    """Load what ``vitkit serve SOURCE`` serves: a classifier or CLIP run folder, ``hf:org/name``, or a
    checkpoint folder (HF / timm / vitkit). ``amp``: an amp name (None: a run's own, else "auto");
    ``onnx``: an exported graph of the same classifier (`vitkit export RUN --onnx FILE`) that then
    computes classify (ONNX Runtime)."""
    from ..train.precision import resolve_amp
    from ..weights import hub
    from ..train.tasks import _is_run_folder
    path = Path(source)
    if path.is_file() and path.name == "config.json":  # RUN/config.json names its run
        path = path.parent
    if path.is_dir() and _is_run_folder(path):
        served = _from_run(str(path), amp, weights)
    else:
        if not hub.is_hub_id(source) and not path.exists():
            raise FileNotFoundError(f"{source}: no run folder, checkpoint or hf:org/name by that name")
        folder = hub.resolve(source) if hub.is_hub_id(source) else path
        dtype = resolve_amp(amp or "auto")
        if folder.is_dir() and _is_hf_clip(folder):
            from ..cli.sample import _clip_normalisation
            from ..weights.clip import load_clip
            model = load_clip(source)
            mean, std = _clip_normalisation(source)
            served = ServedModel(source, source, "clip", model, tuple(model.input_size), mean, std, None, dtype)
        else:
            served = _from_checkpoint(source, dtype)
    if onnx:
        if not Path(onnx).is_file():
            raise FileNotFoundError(f"--onnx {onnx}: no such file (write one with `vitkit export RUN --onnx FILE`)")
        if served.kind != "classifier":
            raise ValueError(f"--onnx runs a classifier's graph; {source} is a {served.kind} model")
        from ..export.onnx import onnx_session
        served.onnx, served.onnx_path = onnx_session(onnx, threads), str(onnx)
        _check_onnx(served)
    return served


def _from_run(source: str, amp: str | None, weights: str | None) -> ServedModel:
    from ..train.run import load_run
    run = load_run(source, weights)
    if run.kind not in ("classifier", "clip"):
        run.needs(("classifier", "clip"), "serve")
    dtype = run.amp(amp)
    name = f"{run.train_cfg.model} ({run.path.name})"
    if run.kind == "clip":
        from ..weights.clip import load_clip
        model = load_clip(run.path, weights)
        return ServedModel(name, str(run.path), "clip", model, tuple(model.input_size), run.mean, run.std, None, dtype)
    crop = run.config.get("eval_crop") or {}
    return ServedModel(name, str(run.path), "classifier", run.model, run.input_size, run.mean, run.std,
                       list(run.classes), dtype, crop_pct=crop.get("crop_pct"), crop_mode=crop.get("crop_mode"),
                       interpolation=crop.get("interpolation"), transform=input_transform(None, None, None, run=run))


def _from_checkpoint(source: str, dtype) -> ServedModel:
    from ..weights.load import from_checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        model = from_checkpoint(source)
    pc = getattr(model, "pretrained_cfg", None)
    c = model.input_size[0]
    mean, std = getattr(pc, "mean", None), getattr(pc, "std", None)
    if mean is None or std is None:
        warnings.warn(f"{source} states no normalisation (preprocessor_config.json / pretrained_cfg); "
                      "using mean = std = 0.5 per channel", UserWarning, stacklevel=3)
        mean, std = (0.5,) * c, (0.5,) * c
    num_classes = getattr(model, "num_classes", 0)
    classes = list(pc.label_names) if pc is not None and pc.label_names else (
        [str(i) for i in range(num_classes)] if num_classes else None)
    return ServedModel(source, source, "classifier" if num_classes else "backbone", model,
                       tuple(pc.input_size if pc is not None and pc.input_size else model.input_size),
                       tuple(mean), tuple(std), classes, dtype, crop_pct=getattr(pc, "crop_pct", None),
                       interpolation=getattr(pc, "interpolation", None), crop_mode=getattr(pc, "crop_mode", None))


def _check_onnx(served: ServedModel) -> None:
    """The ONNX graph must be this model's: same input size and number of classes, logits within 1e-3."""
    from ..export.onnx import onnx_forward
    x = torch.randn(2, *served.input_size, generator=torch.Generator().manual_seed(0))
    try:
        got = onnx_forward(served.onnx, x)
    except Exception as e:
        raise ValueError(f"{served.onnx_path} does not run on this model's input {served.input_size}: "
                         f"{type(e).__name__}") from None
    with torch.inference_mode():
        want = served.model(x).float()
    if got.shape != want.shape or (got - want).abs().max().item() > 1e-3:
        raise ValueError(f"{served.onnx_path} is not an export of {served.source}: its logits differ "
                         "(export it with `vitkit export RUN --onnx FILE`)")
