"""One key-mapping machinery for every checkpoint format: tables of rules, applied both ways.

A *rule* pairs a vitkit key pattern with one or more foreign key patterns and a *transform* that
turns the foreign tensors into ours and back (identity, transpose, q/k/v fused into one qkv,
Flax's (D, heads, hd) kernels, ...). Patterns name their variable parts: ``{i}`` (a block number),
``{p}`` (one name component, e.g. ``weight``/``bias``), ``{rest}`` (anything). For example

    Rule("blocks.{i}.attn.qkv.{p}", ("encoder.layer.{i}.attention.attention.query.{p}",
                                     "encoder.layer.{i}.attention.attention.key.{p}",
                                     "encoder.layer.{i}.attention.attention.value.{p}"), FUSE_QKV)

A *format* (``KeyMap``) is one table plus how to recognise it from its keys, which foreign keys it
knowingly drops (an MAE decoder), and an optional clean-up of the foreign dict before mapping
(prefixes, Flax's stacked blocks). ``to_vitkit`` / ``from_vitkit`` run a table in either direction;
whatever no rule consumed is returned, never silently dropped.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

_FIELD = re.compile(r"\{(\w+)\}")
_FIELD_RE = {"i": r"\d+", "j": r"\d+", "rest": r".+"}  # any other name: one dot-free component


def compile_pattern(pattern: str) -> re.Pattern:
    """``"blocks.{i}.norm1.{p}"`` -> a regex with named groups ``i`` and ``p``, anchored at both ends."""
    out, pos = [], 0
    for m in _FIELD.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>{_FIELD_RE.get(m.group(1), r'[^./]+')})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "$")


# ---- tensor transforms: ours(theirs_tensors, ctx) -> tensor; theirs(tensor, ctx) -> tensors ----
@dataclass(frozen=True)
class Transform:
    name: str
    ours: Callable[[tuple[Tensor, ...], dict], Tensor]
    theirs: Callable[[Tensor, dict], tuple[Tensor, ...]]


def _heads(ctx: dict) -> int:
    if not ctx.get("num_heads"):
        raise ValueError("this layout stores attention per head: the number of heads is needed "
                         "(pass a model config or --model)")
    return int(ctx["num_heads"])


IDENTITY = Transform("identity", lambda ts, ctx: ts[0], lambda t, ctx: (t,))
# Flax Dense kernels are (in, out); torch Linear weights are (out, in).
TRANSPOSE = Transform("transpose", lambda ts, ctx: ts[0].t(), lambda t, ctx: (t.t(),))
# Separate q, k, v projections (rows: heads contiguous) <-> one fused qkv Linear, rows q then k then v.
FUSE_QKV = Transform("fuse qkv", lambda ts, ctx: torch.cat(ts, dim=0), lambda t, ctx: tuple(t.chunk(3, dim=0)))
# Separate k, v projections <-> one fused kv Linear, rows k then v (PVT's ``kv``; transformers' PVT splits it).
FUSE_KV = Transform("fuse kv", lambda ts, ctx: torch.cat(ts, dim=0), lambda t, ctx: tuple(t.chunk(2, dim=0)))
# A fused q/k Linear (rows q then k) and a separate v <-> one qkv, rows q, k, v (timm ConViT's GPSA ``qk``, ``v``).
FUSE_QK_V = Transform("fuse qk + v", lambda ts, ctx: torch.cat(ts, dim=0),
                      lambda t, ctx: (t[:2 * (t.shape[0] // 3)], t[2 * (t.shape[0] // 3):]))
# Flax conv kernel (P, P, C, D) <-> torch Conv2d weight (D, C, P, P).
CONV_HWIO = Transform("conv HWIO->OIHW", lambda ts, ctx: ts[0].permute(3, 2, 0, 1),
                      lambda t, ctx: (t.permute(2, 3, 1, 0),))
# Flax MultiHeadDotProductAttention: query/key/value kernels (D, heads, hd), biases (heads, hd),
# out kernel (heads, hd, D). Fused: qkv.weight (3D, D) = [Wq; Wk; Wv] with Wq = kernel.reshape(D, D).T.
FLAX_QKV_KERNEL = Transform(
    "flax q/k/v kernels -> fused qkv",
    lambda ts, ctx: torch.cat([t.reshape(t.shape[0], -1).t() for t in ts], dim=0),
    lambda t, ctx: tuple(w.t().reshape(w.shape[1], _heads(ctx), -1) for w in t.chunk(3, dim=0)))
FLAX_QKV_BIAS = Transform(
    "flax q/k/v biases -> fused qkv",
    lambda ts, ctx: torch.cat([t.reshape(-1) for t in ts], dim=0),
    lambda t, ctx: tuple(b.reshape(_heads(ctx), -1) for b in t.chunk(3, dim=0)))
FLAX_OUT_KERNEL = Transform(
    "flax out kernel (heads, hd, D) -> proj (D, D)",
    lambda ts, ctx: ts[0].reshape(-1, ts[0].shape[-1]).t(),
    lambda t, ctx: (t.t().reshape(_heads(ctx), -1, t.shape[0]),))


@dataclass(frozen=True)
class Rule:
    """``ours`` <-> ``theirs`` (one or more keys), tensors changed by ``transform``.

    ``when``: a key pattern (the rule's fields filled in) that must be in the dict being mapped, either
    way, for the rule to apply: e.g. ``blocks.{i}.attn.gating_param``, which timm's ConViT and vitkit
    name alike, marks the blocks whose attention is GPSA (q/k and v stored apart) and not plain MHSA."""
    ours: str
    theirs: tuple[str, ...]
    transform: Transform = IDENTITY
    when: str | None = None

    def __post_init__(self):
        if isinstance(self.theirs, str):
            object.__setattr__(self, "theirs", (self.theirs,))
        object.__setattr__(self, "_ours_re", compile_pattern(self.ours))
        object.__setattr__(self, "_theirs_re", compile_pattern(self.theirs[0]))


def _run(rules: Iterable[Rule], sd: StateDict, forward: bool, ctx: dict) -> tuple[StateDict, list[str], dict[str, str]]:
    """Apply rules foreign -> vitkit (``forward``) or back. Returns (mapped, unconsumed keys, out->source name)."""
    out: StateDict = {}
    source: dict[str, str] = {}
    used: set[str] = set()
    for rule in rules:
        src_re = rule._theirs_re if forward else rule._ours_re
        for k in sd:
            if k in used:
                continue
            m = src_re.match(k)
            if m is None:
                continue
            g = m.groupdict()
            if rule.when is not None and rule.when.format(**g) not in sd:
                continue
            if forward:
                names = [p.format(**g) for p in rule.theirs]
                if not all(n in sd for n in names):
                    continue  # e.g. a lone `query` without `key`: left for the report
                targets = [rule.ours.format(**g)]
                tensors = (rule.transform.ours(tuple(sd[n] for n in names), ctx),)
            else:
                names = [k]
                targets = [p.format(**g) for p in rule.theirs]
                tensors = rule.transform.theirs(sd[k], ctx)
            for t, v in zip(targets, tensors):
                if t in out:
                    raise AssertionError(f"two rules write {t!r}")  # a bug in a table, not in the file
                out[t] = v
                source[t] = names[0]
            used.update(names)
    return out, [k for k in sd if k not in used], source


@dataclass(frozen=True)
class KeyMap:
    """One checkpoint format: its rule table and how to recognise it.

    ``signature``: regexes; the format is detected when any key matches one. ``ignore``: regexes of
    foreign keys dropped on purpose (reported, not an error). ``prepare``: foreign dict -> foreign
    dict, run before mapping (strip prefixes, unstack scanned blocks). ``unsupported``: a message
    raised when detected (a layout we recognise but cannot represent yet). ``hints``: ViTConfig
    fields the stored tensors themselves reveal (Flax keeps the number of heads in a kernel's shape).
    ``config_fields``: the model config fields the checkpoint's ``config.json`` states, for a family
    other than ViT (None: ``load.Checkpoint.config_fields`` reads it as a ViT's). ``function_fields``:
    (config field, what it is, the config.json's name) of fields that change the function without
    changing a shape (PVT's heads): ``load_weights`` warns where the model differs from the config.
    """
    name: str
    description: str
    rules: tuple[Rule, ...]
    signature: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    prepare: Callable[[StateDict], StateDict] | None = None
    unsupported: str | None = None
    hints: Callable[[StateDict], dict] | None = None  # config fields the stored tensors reveal (heads)
    priority: int = 50  # detection order: lower is tried first (most specific layouts first)
    config_fields: Callable[[dict], dict] | None = None
    function_fields: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "_sig", tuple(re.compile(s) for s in self.signature))
        object.__setattr__(self, "_ign", tuple(re.compile(s) for s in self.ignore))

    def matches(self, keys: Iterable[str]) -> bool:
        return any(r.search(k) for k in keys for r in self._sig)

    def to_vitkit(self, sd: StateDict, ctx: dict | None = None
                  ) -> tuple[StateDict, list[str], list[str], dict[str, str]]:
        """Foreign -> vitkit: (mapped, unmapped foreign keys, ignored foreign keys, vitkit key -> foreign key)."""
        if self.unsupported:
            raise ValueError(self.unsupported)
        sd = self.prepare(sd) if self.prepare else sd
        out, rest, source = _run(self.rules, sd, True, ctx or {})
        ignored = [k for k in rest if any(r.search(k) for r in self._ign)]
        return out, [k for k in rest if k not in ignored], ignored, source

    def from_vitkit(self, sd: StateDict, ctx: dict | None = None) -> tuple[StateDict, list[str]]:
        """vitkit -> foreign: (mapped, vitkit keys this format cannot hold)."""
        out, rest, _ = _run(self.rules, sd, False, ctx or {})
        return out, rest


FORMATS: dict[str, KeyMap] = {}


def register_format(km: KeyMap) -> KeyMap:
    if km.name in FORMATS:
        raise ValueError(f"checkpoint format {km.name!r} is already registered")
    FORMATS[km.name] = km
    return km


def strip_wrapper(sd: StateDict) -> StateDict:
    """Drop a ``module.`` prefix that DataParallel/DDP put on every key."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def detect_format(keys: Iterable[str]) -> KeyMap:
    """The registered format whose signature the keys match first."""
    keys = list(keys)
    _register_all()
    for km in sorted(FORMATS.values(), key=lambda f: f.priority):
        if km.matches(keys):
            return km
    shown = ", ".join(keys[:6]) or "(none)"
    raise ValueError(f"unrecognised checkpoint layout (not vitkit, HF ViT/ViTMAE, timm or Google ViT); "
                     f"its first keys: {shown}")


def get_format(name: str) -> KeyMap:
    _register_all()
    if name not in FORMATS:
        raise ValueError(f"unknown checkpoint format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def _register_all() -> None:
    """Import the format modules; each registers its tables."""
    from . import convit, efficientvit, google, hf, pvt, swin, timm, vitkit_format  # noqa: F401
