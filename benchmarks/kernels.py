"""The kernel choices behind vitkit's CPU speed, measured side by side (the numbers DESIGN.md and
layers/linear.py, layers/attention.py quote).

    python benchmarks/kernels.py           # writes results/kernels.{md,json}
    python benchmarks/kernels.py --quick   # tiny shapes, one repeat (the test suite runs this)

1. GEMM: ``F.linear`` (MKL in PyTorch's CPU build) vs oneDNN (``torch.ops.mkldnn._linear_pointwise``,
   what ``vitkit.layers.Linear`` calls), on ViT-S/16's batch-32 shapes and the demo ViT's.
2. The backward GEMMs of a Linear layer: the weight gradient dW = g^T x by MKL (``torch.mm``), by
   oneDNN after copying both transposes (vitkit until 2026-11-24), and by oneDNN reading the
   transposes in place with the smaller operand first (``layers.linear._weight_grad``); the input
   gradient dx = g W by oneDNN with W^T copied vs W^T read in place.
3. Prepacked weights (``vitkit.export.freeze``): the oneDNN GEMM with the plain weight vs the weight
   reordered once into oneDNN's blocked layout.
4. fc1 + GELU: two steps vs one oneDNN GEMM with a GELU post-op (vitkit's inference MLP).
5. Attention from the fused qkv (B, N, 3 D) to the merged heads (B, N, D), forward + backward: q, k, v
   split per head then ``F.scaled_dot_product_attention`` or the explicit three ops (``attend``), vs
   ``layers.attention.short_attention`` (one autograd node), at the demo's 17 tokens, 65 and ViT-S's
   197 (vitkit's Attention takes short_attention up to N^2 = 128^2 on the CPU, SDPA beyond).
6. Attention with a bias (Swin's 7x7 windows), forward + backward: SDPA vs ``attend``'s explicit path.
7. The demo ViT's training step (batch 32, fused AdamW) with its attention split per head (``attend``)
   vs short_attention: what the fusion buys a whole model.
8. Where that step's time goes, timed inline (``perf_counter`` around vitkit's Linear and attention
   autograd Functions; ``torch.profiler`` inflates memory-bound copies several-fold, so it is not used).
9. PyTorch's transposed copy (``x.t().contiguous()``, what a transposed GEMM operand costs) vs a plain
   copy of the same matrix: the part of the weight gradient that oneDNN cannot read in place.
10. Softmax of the attention scores over their last dim vs over dim 1 of the transposed scores (what
   short_attention does): PyTorch's CPU softmax is slow over a short last dim.

bf16 (issue 19; where oneDNN has bf16: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``), what vitkit
runs under ``torch.autocast("cpu", torch.bfloat16)`` against what autocast alone would run:
11. bf16 GEMM: ``F.linear`` on bf16 tensors (what autocast calls after casting) vs oneDNN's bf16 inner
   product (vitkit's Linear), plain and with the weight packed (``freeze``); and, fp32 and bf16, the
   plain weight vs the weight packed on every call (what Linear does from ``PACK_ROWS`` rows on).
12. Post-ops in bf16: fc1 + GELU, and proj / fc2 + the residual add: the GEMM then the elementwise op vs
   one GEMM with the post-op; and autocast's residual add (an fp32 stream plus the bf16 branch).
13. bf16 backward of a Linear layer: dW by ATen's mm vs ``_weight_grad``; db summed in bf16 vs in fp32.
14. Attention in bf16 from the fused qkv, forward and forward + backward: SDPA vs short_attention with
   the scores transposed (S^T, softmax over dim 1) or not (S, softmax over the last dim), and
   short_attention in fp32 (what vitkit ran under autocast before).
15. The LayerNorm of each block on the residual stream: fp32 (autocast's) then cast vs bf16 in, bf16 out.
16. One ViT-S/16 block at batch 32 under bf16 autocast, inference and forward + backward: autocast's
   ops (vitkit's fast paths off) vs vitkit's bf16 fast paths; and the demo's training step likewise.
17. A class-token ViT's forward whose last block computes the class token only vs all tokens: ViT-S/16
   inference at batch 32 and the demo's training step, both in bf16.
Medians of interleaved repeats in one run. ``--threads 1 --clock cpu`` times CPU time at one thread: on a
shared, loaded host that estimates what the work costs on a quiet one (the header says which was used).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vitkit.bench.measure as measure
from vitkit.bench.measure import command, environment, write_results
from vitkit.bench.speed import DEMO, DEMO_BATCH
from vitkit.layers.attention import _ShortAttention, attend, merge_heads, short_attention, split_heads
from vitkit.layers.linear import _AVAILABLE, _onednn as onednn, _onednn_add, _weight_grad, fast_linear, native_bf16

RESULTS = Path(__file__).parent / "results"
GEMMS = [(6304, 384, 1152), (6304, 384, 1536), (6304, 1536, 384), (544, 128, 384), (544, 128, 256),
         (544, 256, 128)]
SMALL_GEMMS = [(136, 128, 384), (68, 128, 384), (34, 128, 384), (17, 128, 384)]  # around Linear's MIN_MACS
ATTENTION = [(32, 4, 17, 32), (32, 6, 65, 64), (32, 6, 197, 64)]  # (B, heads, N, head dim)
BF16 = torch.bfloat16
BF16_GEMMS = [(6304, 384, 1152), (6304, 384, 384), (6304, 384, 1536), (6304, 1536, 384), (1088, 128, 384),
              (1088, 128, 256), (1088, 256, 128)]                      # ViT-S/16 at 32, the demo's ViT at 64
BF16_ATTENTION = [(64, 4, 17, 32), (32, 6, 65, 64), (32, 6, 197, 64)]
CLOCK = None  # measure.interleaved's clock (--clock): None = wall time
AUTOCAST_ADD = "autocast's (fp32 stream)"


def interleaved(fns, repeats, *args, **kw):
    return measure.interleaved(fns, repeats, *args, clock=CLOCK, **kw)


def gemms(shapes, repeats: int) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
        res = interleaved({"F.linear (MKL)": lambda: F.linear(x, w, b), "oneDNN": lambda: onednn(x, w, b)},
                          repeats, calls=3, warmup=2)
        rows.append({"shape": [m, k, n], **{name: 2 * m * k * n / v["median"] / 1e9 for name, v in res.items()}})
    return rows


def backward_gemms(shapes, repeats: int) -> list[dict]:
    """ms per call of dW = g^T x and dx = g W for a Linear layer with x (M, K), W (N, K), g (M, N)."""
    rows = []
    for m, k, n in shapes:
        x, w, g = torch.randn(m, k), torch.randn(n, k), torch.randn(m, n)
        ref = g.t() @ x
        fns = {"dW: MKL mm": lambda: torch.mm(g.t(), x),
               "dW: oneDNN, transposes copied": lambda: onednn(g.t().contiguous(), x.t().contiguous(), None),
               "dW: oneDNN, in place": lambda: _weight_grad(g, x),
               "dx: oneDNN, W^T copied": lambda: onednn(g, w.t().contiguous(), None),
               "dx: oneDNN, in place": lambda: onednn(g, w.t(), None)}
        assert (_weight_grad(g, x) - ref).abs().max() <= 1e-4 * ref.abs().max()
        res = interleaved(fns, repeats, calls=3, warmup=2)
        rows.append({"shape": [m, k, n], **{name: v["median"] * 1e3 for name, v in res.items()}})
    return rows


def prepacked(shapes, repeats: int) -> list[dict]:
    """ms per call of the oneDNN GEMM with the plain weight and with it prepacked (as ``freeze`` does)."""
    rows = []
    for m, k, n in shapes:
        x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        assert torch.equal(onednn(x, w, b), onednn(x, packed, b))
        res = interleaved({"plain": lambda: onednn(x, w, b), "prepacked": lambda: onednn(x, packed, b)},
                          repeats, calls=3, warmup=2)
        rows.append({"shape": [m, k, n], **{name: v["median"] * 1e3 for name, v in res.items()}})
    return rows


def fused_gelu(shape, repeats: int) -> dict:
    m, k, n = shape
    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
    res = interleaved({"GEMM then GELU": lambda: F.gelu(onednn(x, w, b)),
                       "GEMM + GELU post-op": lambda: onednn(x, w, b, "gelu", "none")}, repeats, calls=3, warmup=2)
    return {"shape": list(shape), **{name: v["median"] * 1e3 for name, v in res.items()}}


def split_heads_attention(qkv: torch.Tensor, num_heads: int, sdpa: bool = False) -> torch.Tensor:
    """What vitkit's Attention did before short_attention: q, k, v split per head, ``attend``'s explicit
    path (or SDPA), heads merged. (B, N, 3 D) -> (B, N, D)."""
    q, k, v = split_heads(qkv, num_heads)
    return merge_heads(F.scaled_dot_product_attention(q, k, v) if sdpa else attend(q, k, v, return_attention=True)[0])


def attention(shapes, repeats: int) -> list[dict]:
    rows = []
    for B, h, N, d in shapes:
        qkv = torch.randn(B, N, 3 * h * d, requires_grad=True)
        g = torch.randn(B, N, h * d)
        # autograd.grad, not backward: inside a model qkv is no leaf, nothing accumulates into a .grad
        fns = {"SDPA": lambda: torch.autograd.grad(split_heads_attention(qkv, h, sdpa=True), qkv, g),
               "explicit": lambda: torch.autograd.grad(split_heads_attention(qkv, h), qkv, g),
               "short_attention": lambda: torch.autograd.grad(short_attention(qkv, h), qkv, g)}
        res = interleaved(fns, repeats, calls=3, warmup=2)
        rows.append({"shape": [B, h, N, d], **{name: r["median"] * 1e3 for name, r in res.items()}})
    return rows


def biased_attention(shapes, repeats: int) -> list[dict]:
    """``attend`` with an additive bias (Swin's relative-position bias in 7x7 windows), forward +
    backward: SDPA with the bias as its mask vs the explicit path."""
    rows = []
    for B, h, N, d in shapes:
        q, k, v = (torch.randn(B, h, N, d, requires_grad=True) for _ in range(3))
        bias = torch.randn(h, N, N, requires_grad=True)
        g = torch.randn(B, h, N, d)
        inputs = (q, k, v, bias)
        fns = {"SDPA": lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, attn_mask=bias), inputs, g),
               "explicit": lambda: torch.autograd.grad(attend(q, k, v, bias, return_attention=True)[0], inputs, g)}
        res = interleaved(fns, repeats, calls=3, warmup=2)
        rows.append({"shape": [B, h, N, d], **{name: r["median"] * 1e3 for name, r in res.items()}})
    return rows


def _train_step(name: str, overrides: dict):
    """One training step (forward, backward, fused AdamW) of a fresh ``name`` at batch 32, as `vitkit bench`."""
    import vitkit
    from vitkit.bench.speed import train_fn
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides)
    x, y = torch.randn(32, *model.input_size), torch.randint(0, model.num_classes, (32,))
    return train_fn(model, model, x, y, torch.device("cpu"))


def demo_step(name: str, overrides: dict, repeats: int, block_s: float) -> dict:
    """ms per training step of ``name`` at batch 32, its attention split per head vs short_attention."""
    import vitkit.layers.attention as A
    step = _train_step(name, overrides)
    fused = A.short_attention

    def split_step():
        A.short_attention = split_heads_attention
        try:
            step()
        finally:
            A.short_attention = fused
    res = interleaved({"split heads (attend)": split_step, "short_attention": step}, repeats, warmup=3,
                      min_block_s=block_s)
    return {"model": name, **overrides, "block_seconds": block_s, **{k: r["median"] * 1e3 for k, r in res.items()}}


def step_breakdown(name: str, overrides: dict, steps: int) -> dict:
    """Median ms per training step of ``name`` (batch 32) in: the whole step; the Linear layers' forward;
    their backward, split into the weight gradient (``_weight_grad``) and the rest (dx, db); and
    short_attention's forward and backward. Each part is timed inline around the function doing it."""
    import statistics
    import time

    import vitkit.layers.attention as A
    import vitkit.layers.linear as L
    spent: dict[str, float] = {}

    clock = CLOCK or time.perf_counter

    def timed(fn, part):
        def run(*args):
            t = clock()
            out = fn(*args)
            spent[part] = spent.get(part, 0.0) + clock() - t
            return out
        return run

    patches = [(L._OneDNNLinear, "forward", staticmethod(timed(L._OneDNNLinear.forward, "Linear forward"))),
               (L._OneDNNLinear, "backward", staticmethod(timed(L._OneDNNLinear.backward, "Linear backward"))),
               (L, "_weight_grad", timed(L._weight_grad, "Linear dW")),
               (A._ShortAttention, "forward", staticmethod(timed(A._ShortAttention.forward, "attention forward"))),
               (A._ShortAttention, "backward", staticmethod(timed(A._ShortAttention.backward, "attention backward")))]
    saved = [(obj, attr, obj.__dict__[attr]) for obj, attr, _ in patches]
    step = _train_step(name, overrides)
    per_step: dict[str, list[float]] = {}
    parts = ("Linear forward", "Linear backward", "attention forward", "attention backward")
    try:
        for obj, attr, new in patches:
            setattr(obj, attr, new)
        for i in range(steps + 5):
            spent.clear()
            t = clock()
            step()
            spent["step"] = clock() - t
            if i >= 5:                                                   # after a warm-up
                spent["Linear dx + db"] = spent["Linear backward"] - spent["Linear dW"]
                spent["everything else"] = spent["step"] - sum(spent[p] for p in parts)
                for part, s in spent.items():
                    per_step.setdefault(part, []).append(s * 1e3)
    finally:
        for obj, attr, old in saved:
            setattr(obj, attr, old)
    res = {part: statistics.median(v) for part, v in per_step.items()}  # each part's median over the steps
    return {"model": name, **overrides, "steps": steps, **res}


def transposes(shapes, repeats: int) -> list[dict]:
    """ms to copy an (M, N) matrix transposed (``t().contiguous()``) vs as it is (``clone()``)."""
    rows = []
    for m, n in shapes:
        a = torch.randn(m, n)
        res = interleaved({"transposed copy": lambda: a.t().contiguous(), "plain copy": lambda: a.clone()},
                          repeats, calls=20, warmup=5)
        rows.append({"shape": [m, n], **{k: r["median"] * 1e3 for k, r in res.items()}})
    return rows


def softmaxes(shapes, repeats: int) -> list[dict]:
    """ms for softmax of (batch, N, N) scores over the last dim vs over dim 1 of the same numbers stored
    transposed, forward and backward (``_softmax_backward_data``)."""
    rows = []
    for b, n in shapes:
        s = torch.randn(b, n, n)
        st = s.transpose(1, 2).contiguous()
        p, pt, g, gt = s.softmax(-1), st.softmax(1), torch.randn(b, n, n), torch.randn(b, n, n)
        fns = {"last dim": lambda: (s.softmax(-1), torch._softmax_backward_data(g, p, -1, p.dtype)),
               "dim 1, transposed": lambda: (st.softmax(1), torch._softmax_backward_data(gt, pt, 1, pt.dtype))}
        res = interleaved(fns, repeats, calls=20, warmup=5)
        rows.append({"shape": [b, n, n], **{k: r["median"] * 1e3 for k, r in res.items()}})
    return rows


# ---------------------------------------------------------------------------------------- bf16 (issue 19)
def bf16_gemms(shapes, repeats: int) -> list[dict]:
    """GFLOP/s of the bf16 GEMM + bias: F.linear on bf16 tensors (autocast's), oneDNN, oneDNN packed."""
    rows = []
    for m, k, n in shapes:
        x, w, b = torch.randn(m, k).to(BF16), (torch.randn(n, k) * 0.05).to(BF16), torch.randn(n)
        b16, packed = b.to(BF16), torch.ops.mkldnn._reorder_linear_weight(w)
        fns = {"F.linear bf16": lambda: F.linear(x, w, b16), "oneDNN bf16": lambda: onednn(x, w, b),
               "oneDNN bf16 packed": lambda: onednn(x, packed, b)}
        res = interleaved(fns, repeats, calls=3, warmup=2)
        rows.append({"shape": [m, k, n], **{name: 2 * m * k * n / v["median"] / 1e9 for name, v in res.items()}})
    return rows


def packed_per_call(shapes, repeats: int) -> list[dict]:
    """ms of the oneDNN GEMM given the plain weight vs the weight reordered into its blocked layout on every
    call (for that batch size, the reorder timed too), fp32 and bf16: where ``Linear`` packs per call
    (``layers.linear.PACK_ROWS``)."""
    rows = []
    for dtype in (torch.float32, BF16):
        for m, k, n in shapes:
            x, w = torch.randn(m, k).to(dtype), torch.randn(n, k)
            fns = {"plain": lambda: onednn(x, w.to(dtype)),
                   "packed per call": lambda: onednn(x, torch.ops.mkldnn._reorder_linear_weight(w.to(dtype), m))}
            res = interleaved(fns, repeats, calls=3, warmup=2)
            rows.append({"shape": [m, k, n], "dtype": str(dtype).split(".")[1],
                         **{name: v["median"] * 1e3 for name, v in res.items()}})
    return rows


def bf16_post_ops(shapes, repeats: int) -> list[dict]:
    """ms of a bf16 GEMM and what follows it, unfused vs as oneDNN post-ops: (M, K, N) of fc1 (GELU) and
    of proj / fc2 (the residual add; autocast's add: its fp32 residual stream plus the bf16 branch)."""
    rows = []
    for i, (m, k, n) in enumerate(shapes):
        x, w, b = torch.randn(m, k).to(BF16), (torch.randn(n, k) * 0.05).to(BF16), torch.randn(n)
        if i == 0:
            fns = {"unfused": lambda: F.gelu(onednn(x, w, b)), "post-op": lambda: onednn(x, w, b, "gelu", "none")}
            what = "fc1 + GELU"
        else:
            r, r32, b16 = torch.randn(m, n).to(BF16), torch.randn(m, n), b.to(BF16)
            fns = {"unfused": lambda: r + onednn(x, w, b16), "post-op": lambda: _onednn_add(x, r, w, b16),
                   AUTOCAST_ADD: lambda: r32 + F.linear(x, w, b16)}
            what = "GEMM + residual"
        res = interleaved(fns, repeats, calls=3, warmup=2)
        rows.append({"shape": [m, k, n], "op": what, **{name: v["median"] * 1e3 for name, v in res.items()}})
    return rows


def bf16_backward(shapes, repeats: int) -> list[dict]:
    """ms of a bf16 Linear's dW = g^T x (ATen's mm vs _weight_grad) and db (bf16 sum vs sum in fp32)."""
    rows = []
    for m, k, n in shapes:
        x, g = torch.randn(m, k).to(BF16), torch.randn(m, n).to(BF16)
        fns = {"dW: ATen mm": lambda: torch.mm(g.t(), x), "dW: _weight_grad": lambda: _weight_grad(g, x),
               "db: bf16 sum": lambda: g.sum(0).float(), "db: sum(dtype=fp32)": lambda: g.sum(0, dtype=torch.float32)}
        res = interleaved(fns, repeats, calls=3, warmup=2)
        rows.append({"shape": [m, k, n], **{name: v["median"] * 1e3 for name, v in res.items()}})
    return rows


def bf16_attention(shapes, repeats: int, train: bool) -> list[dict]:
    """ms of attention from the fused qkv (B, N, 3 D) to the merged heads, bf16 (forward, or forward +
    backward): SDPA, short_attention with S^T and with S, and short_attention in fp32 (casts included)."""
    rows = []
    for B, h, N, d in shapes:
        qkv = torch.randn(B, N, 3 * h * d).to(BF16).requires_grad_(train)
        g = torch.randn(B, N, h * d).to(BF16)
        ways = {"SDPA bf16": lambda z: split_heads_attention(z, h, sdpa=True),
                "short S^T bf16": lambda z: _ShortAttention.apply(z, h, False),
                "short S bf16": lambda z: _ShortAttention.apply(z, h, True),
                "short fp32": lambda z: _ShortAttention.apply(z.float(), h, False).to(BF16)}
        if train:
            fns = {k: (lambda f=f: torch.autograd.grad(f(qkv), qkv, g)) for k, f in ways.items()}
        else:
            fns = {k: (lambda f=f: f(qkv)) for k, f in ways.items()}
        with torch.set_grad_enabled(train):
            res = interleaved(fns, repeats, calls=3 if N > 100 else 20, warmup=2)
        rows.append({"shape": [B, h, N, d], **{k: r["median"] * 1e3 for k, r in res.items()}})
    return rows


def bf16_layer_norm(shapes, repeats: int) -> list[dict]:
    """ms of a block's LayerNorm on the residual stream: fp32 in (autocast's stream) and the output cast to
    bf16 for the GEMM, vs bf16 in and out (vitkit's bf16 stream; fp32 statistics inside)."""
    rows = []
    for m, d in shapes:
        x, w, b = torch.randn(m, d), torch.ones(d), torch.zeros(d)
        x16 = x.to(BF16)
        fns = {"fp32 stream, then cast": lambda: F.layer_norm(x, (d,), w, b).to(BF16),
               "bf16 stream": lambda: F.layer_norm(x16, (d,), w, b)}
        res = interleaved(fns, repeats, calls=5, warmup=2)
        rows.append({"shape": [m, d], **{k: r["median"] * 1e3 for k, r in res.items()}})
    return rows


def _fast(on: bool, fn):
    def run():
        with fast_linear(on):
            return fn()
    return run


def bf16_block(shape, repeats: int) -> dict:
    """ms of one transformer block (B, N, D) under bf16 autocast, autocast's ops (fast paths off) vs
    vitkit's bf16 fast paths: inference, and forward + backward."""
    from vitkit.layers import Block
    B, N, D, heads = shape
    torch.manual_seed(0)
    blk = Block(D, heads)
    x = torch.randn(B, N, D, requires_grad=True)
    g = torch.randn(B, N, D).to(BF16)

    def infer():
        with torch.inference_mode(), torch.autocast("cpu", BF16):
            blk(x)

    def train():
        with torch.autocast("cpu", BF16):
            y = blk(x)
        torch.autograd.grad(y, [x, *blk.parameters()], g.to(y.dtype))
    fns = {"infer: autocast": _fast(False, infer), "infer: vitkit bf16": _fast(True, infer),
           "train: autocast": _fast(False, train), "train: vitkit bf16": _fast(True, train)}
    res = interleaved(fns, repeats, warmup=2)
    return {"shape": list(shape), **{k: r["median"] * 1e3 for k, r in res.items()}}


def bf16_model(name: str, overrides: dict, batch: int, repeats: int, block_s: float) -> dict:
    """ms per training step of ``name`` under bf16 autocast (as `vitkit bench`): autocast's ops vs vitkit's
    bf16 fast paths, and the fast paths with the last block on all tokens (the class-token-only forward
    off); and ms per inference call of the same three."""
    import vitkit
    import vitkit.models.vit as V
    from vitkit.bench.speed import infer_fn, train_fn
    torch.manual_seed(0)
    model = vitkit.create_model(name, **overrides)
    x, y = torch.randn(batch, *model.input_size), torch.randint(0, model.num_classes, (batch,))
    cpu = torch.device("cpu")
    step, call = train_fn(model, model, x, y, cpu, BF16), infer_fn(model, x, cpu, BF16)

    def all_tokens(fn):
        def run():
            V.fast_paths_enabled = lambda: False          # only the class-token-only forward off
            try:
                fn()
            finally:
                V.fast_paths_enabled = fast_paths
        return run
    fast_paths = V.fast_paths_enabled
    fns = {"train: autocast": _fast(False, step), "train: vitkit bf16, all tokens": all_tokens(step),
           "train: vitkit bf16": step, "infer: autocast": _fast(False, call),
           "infer: vitkit bf16, all tokens": all_tokens(call), "infer: vitkit bf16": call}
    res = interleaved(fns, repeats, warmup=2, min_block_s=block_s)
    model.eval()
    return {"model": name, **overrides, "batch": batch, **{k: r["median"] * 1e3 for k, r in res.items()}}


def _versus(title: str, shape: str, rows: list[dict] | None, a: str, b: str, heads: tuple[str, str] | None = None,
            ratio: str = "", fmt: str = ".3f", rfmt: str = ".2f") -> list[str]:
    """A report section timing two ways, ``a`` and ``b``, per shape: | shape | a | b | a / b | (none
    without rows). ``heads``: the two columns' titles where they are not the keys."""
    if not rows:
        return []
    ha, hb = heads or (a, b)
    return ["", f"## {title}\n", f"| {shape} | {ha} | {hb} | {ratio or f'{a} / {b}'} |", "|---|---|---|---|"] + [
        f"| {r['shape']} | {r[a]:{fmt}} | {r[b]:{fmt}} | {r[a] / r[b]:{rfmt}}x |" for r in rows]


def report(res: dict) -> str:
    clock = res.get("clock", "wall")
    timed = ("wall time" if clock == "wall" else
             "CPU time of this process (`--clock cpu`: on a shared, loaded host at one thread it estimates "
             "the time on a quiet one)")
    lines = [f"# CPU kernels behind vitkit's speed ({res['threads']} threads, fp32"
             + (" and bf16" if res.get("bf16_gemm") else "") + ")\n",
             f"Host: {res['machine']}, torch {res['torch']}. Made by `{res['command']}`; medians of "
             f"{res['repeats']} interleaved repeats, {timed}; do not edit by hand.\n",
             "## GEMM, GFLOP/s ((M x K) @ (K x N) + bias)\n", "| M, K, N | F.linear (MKL) | oneDNN | oneDNN / MKL |",
             "|---|---|---|---|"]
    for r in res["gemm"]:
        lines.append(f"| {r['shape']} | {r['F.linear (MKL)']:.0f} | {r['oneDNN']:.0f} | "
                     f"{r['oneDNN'] / r['F.linear (MKL)']:.2f}x |")
    bw = res.get("backward", [])
    if bw:
        names = [k for k in bw[0] if k != "shape"]
        lines += ["", "## Backward GEMMs of a Linear layer (ms; x (M, K), W (N, K), g (M, N))\n",
                  "| M, K, N | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {r['shape']} | " + " | ".join(f"{r[k]:.3f}" for k in names) + " |" for r in bw]
    lines += _versus("Prepacked weights (ms per oneDNN GEMM)", "M, K, N", res.get("prepacked"), "plain", "prepacked")
    f = res["fused_gelu"]
    lines += ["", f"## fc1 + GELU at {f['shape']} (ms)\n", "| GEMM then GELU | GEMM + GELU post-op |", "|---|---|",
              f"| {f['GEMM then GELU']:.2f} | {f['GEMM + GELU post-op']:.2f} |",
              "", "## Attention from the fused qkv to the merged heads, forward + backward (ms)\n",
              "| B, heads, N, head dim | SDPA | explicit | short_attention | explicit / short_attention |",
              "|---|---|---|---|---|"]
    for r in res["attention"]:
        lines.append(f"| {r['shape']} | {r['SDPA']:.2f} | {r['explicit']:.2f} | {r['short_attention']:.2f} | "
                     f"{r['explicit'] / r['short_attention']:.2f}x |")
    lines += _versus("Attention with a bias (B * windows, heads, 49, head dim), forward + backward (ms)",
                     "B, heads, N, head dim", res.get("biased_attention"), "SDPA", "explicit", fmt=".2f")
    d = res.get("demo_step")
    if d:
        blocks = f"; blocks of {d['block_seconds']} s of consecutive steps" if d.get("block_seconds") else ""
        lines += ["", f"## Training step of {d['model']} (batch 32, forward + backward + fused AdamW; ms{blocks})\n",
                  "| split heads (attend) | short_attention | speed-up |", "|---|---|---|",
                  f"| {d['split heads (attend)']:.2f} | {d['short_attention']:.2f} | "
                  f"{d['split heads (attend)'] / d['short_attention']:.2f}x |"]
    b = res.get("breakdown")
    if b:
        parts = ["Linear forward", "Linear dx + db", "Linear dW", "attention forward", "attention backward",
                 "everything else"]
        lines += ["", f"## Where a training step of {b['model']} goes (batch 32; median ms per step over "
                  f"{b['steps']} steps, timed inline)\n",
                  "| step | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts),
                  f"| {b['step']:.2f} | " + " | ".join(f"{b[k]:.2f}" for k in parts) + " |"]
    lines += _versus("Copying a matrix transposed vs as it is (ms)", "M, N", res.get("transposes"),
                     "transposed copy", "plain copy", ratio="ratio", rfmt=".1f")
    lines += _versus("Softmax of attention scores, forward + backward (ms)", "batch, N, N", res.get("softmax"),
                     "last dim", "dim 1, transposed", ("over the last dim", "over dim 1, scores transposed"), "ratio")
    return "\n".join(lines + _report_bf16(res)) + "\n"


def _table(rows: list[dict], first: str, names: list[str], fmt: str = ".2f", ratio: tuple[str, str] | None = None,
           key: str = "shape") -> list[str]:
    """| first | names... | (a / b) | from rows (each rows[key] and the named values)."""
    head = f"| {first} | " + " | ".join(names) + (f" | {ratio[0]} / {ratio[1]} |" if ratio else " |")
    out = [head, "|---|" + "---|" * (len(names) + bool(ratio))]
    for r in rows:
        cells = [f"{r[n]:{fmt}}" for n in names] + ([f"{r[ratio[0]] / r[ratio[1]]:.2f}x"] if ratio else [])
        out.append(f"| {r[key]} | " + " | ".join(cells) + " |")
    return out


def _report_bf16(res: dict) -> list[str]:
    if not res.get("bf16_gemm"):
        return []
    lines = ["", "## bf16: GEMM + bias, GFLOP/s (what autocast runs, `F.linear` on bf16 tensors, vs vitkit's oneDNN)\n"]
    lines += _table(res["bf16_gemm"], "M, K, N", ["F.linear bf16", "oneDNN bf16", "oneDNN bf16 packed"], ".0f",
                    ("oneDNN bf16", "F.linear bf16"))
    pp = res.get("packed_per_call")
    if pp:
        lines += ["", "## Weight packed per call (ms; the weight cast and reordered for this batch size on every call "
                  "vs passed plain; `layers.linear.PACK_ROWS`)\n",
                  "| M, K, N | dtype | plain | packed per call | plain / packed per call |", "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['dtype']} | {r['plain']:.3f} | {r['packed per call']:.3f} | "
                  f"{r['plain'] / r['packed per call']:.2f}x |" for r in pp]
    post = res["bf16_post_ops"]
    lines += ["", "## bf16: post-ops of the GEMM (ms; the unfused residual add is bf16 + bf16, autocast's adds its "
              "fp32 stream)\n", "| M, K, N | op | unfused | post-op | autocast's (fp32 stream) | unfused / post-op |",
              "|---|---|---|---|---|---|"]
    for r in post:
        ac = f"{r[AUTOCAST_ADD]:.2f}" if AUTOCAST_ADD in r else "-"
        lines.append(f"| {r['shape']} | {r['op']} | {r['unfused']:.2f} | {r['post-op']:.2f} | {ac} | "
                     f"{r['unfused'] / r['post-op']:.2f}x |")
    lines += ["", "## bf16: backward of a Linear layer (ms; x (M, K), g (M, N))\n"]
    lines += _table(res["bf16_backward"], "M, K, N", ["dW: ATen mm", "dW: _weight_grad", "db: bf16 sum",
                                                       "db: sum(dtype=fp32)"], ".3f")
    names = ["SDPA bf16", "short S^T bf16", "short S bf16", "short fp32"]
    for key, what in (("bf16_attention_infer", "forward"), ("bf16_attention_train", "forward + backward")):
        lines += ["", f"## bf16: attention from the fused qkv to the merged heads, {what} (ms)\n"]
        lines += _table(res[key], "B, heads, N, head dim", names, ".3f")
    lines += ["", "## bf16: the LayerNorm on a block's residual stream (ms)\n"]
    lines += _table(res["bf16_layer_norm"], "M, D", ["fp32 stream, then cast", "bf16 stream"], ".3f",
                    ("fp32 stream, then cast", "bf16 stream"))
    b = res.get("bf16_block")
    if b:
        lines += ["", f"## bf16: one transformer block (B, N, D, heads) = {b['shape']} under bf16 autocast (ms)\n",
                  "| run | autocast's ops (fast paths off) | vitkit bf16 | speed-up |", "|---|---|---|---|"]
        for run in ("infer", "train"):
            a, v = b[f"{run}: autocast"], b[f"{run}: vitkit bf16"]
            lines.append(f"| {'inference' if run == 'infer' else 'forward + backward'} | {a:.2f} | {v:.2f} | "
                         f"{a / v:.2f}x |")
    for m in res.get("bf16_models", []):
        lines += ["", f"## bf16: {m['model']} at batch {m['batch']} under bf16 autocast (ms per call)\n",
                  "| run | autocast's ops (fast paths off) | vitkit bf16, last block on all tokens | vitkit bf16 | "
                  "all tokens / class token only | autocast / vitkit bf16 |", "|---|---|---|---|---|---|"]
        for run in ("infer", "train"):
            a, f, v = m[f"{run}: autocast"], m[f"{run}: vitkit bf16, all tokens"], m[f"{run}: vitkit bf16"]
            lines.append(f"| {'inference' if run == 'infer' else 'training step'} | {a:.2f} | {f:.2f} | {v:.2f} | "
                         f"{f / v:.2f}x | {a / v:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time blocks by wall time (default) or by this process's CPU time (a loaded host, 1 thread)")
    args = p.parse_args(argv)
    if not _AVAILABLE:
        sys.exit("kernels: this PyTorch build has no oneDNN")
    quick = args.quick
    repeats = 1 if quick else args.repeats
    global CLOCK
    old_threads, old_clock = torch.get_num_threads(), CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    CLOCK = time.process_time if args.clock == "cpu" else None
    try:
        with fast_linear(True):  # the fast paths are what this measures, whatever VITKIT_ONEDNN says
            res = _measure(quick, repeats, command("python benchmarks/kernels.py", args, p))
    finally:
        torch.set_num_threads(old_threads)
        CLOCK = old_clock
    res["clock"] = args.clock
    print(write_results(args.out, "kernels_quick" if quick else "kernels", res, report(res)))
    return res


def _measure(quick: bool, repeats: int, cmd: str) -> dict:
    res = _measure_fp32(quick, repeats, cmd)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        res.update(_measure_bf16(quick, repeats))
    return res


def _measure_bf16(quick: bool, repeats: int) -> dict:
    tiny = [(64, 32, 48)]
    out = {"bf16_gemm": bf16_gemms(tiny if quick else BF16_GEMMS, repeats),
           "packed_per_call": packed_per_call(tiny if quick else [(6304, 384, 1536), (6304, 1536, 384),
                                                                  (6304, 384, 1152), (3152, 384, 1536),
                                                                  (1576, 384, 1536), (1088, 128, 384)], repeats),
           "bf16_post_ops": bf16_post_ops([(64, 32, 128), (64, 128, 32)] if quick else
                                          [(6304, 384, 1536), (6304, 1536, 384), (6304, 384, 384)], repeats),
           "bf16_backward": bf16_backward(tiny if quick else BF16_GEMMS, repeats),
           "bf16_attention_infer": bf16_attention([(2, 2, 9, 8)] if quick else BF16_ATTENTION, repeats, False),
           "bf16_attention_train": bf16_attention([(2, 2, 9, 8)] if quick else BF16_ATTENTION, repeats, True),
           "bf16_layer_norm": bf16_layer_norm([(64, 32)] if quick else [(6304, 384), (1088, 128)], repeats)}
    if native_bf16() or quick:  # the fast paths run only with native bf16 (elsewhere both columns are autocast's)
        out["bf16_block"] = bf16_block((2, 9, 32, 2) if quick else (32, 197, 384, 6), repeats)
        models = [("vit_nano_patch4_28", {}, 4)] if quick else [("vit_small_patch16_224", {}, 32), (*DEMO, DEMO_BATCH)]
        out["bf16_models"] = [bf16_model(name, kw, batch, repeats, 0.0 if quick else 0.5) for name, kw, batch in models]
    return out


def _measure_fp32(quick: bool, repeats: int, cmd: str) -> dict:
    return {**environment(), "repeats": repeats, "command": cmd,
            "gemm": gemms([(64, 32, 48)] if quick else GEMMS + SMALL_GEMMS, repeats),
            "backward": backward_gemms([(64, 32, 48), (64, 48, 32)] if quick else GEMMS, repeats),
            "prepacked": prepacked([(64, 32, 48)] if quick else GEMMS, repeats),
            "fused_gelu": fused_gelu((64, 32, 128) if quick else (6304, 384, 1536), repeats),
            "attention": attention([(2, 2, 9, 8)] if quick else ATTENTION, repeats),
            "biased_attention": biased_attention([(2, 2, 9, 8)] if quick else [(512, 4, 49, 32)], repeats),
            "demo_step": demo_step(*(("vit_nano_patch4_28", {}) if quick else DEMO), repeats, 0.0 if quick else 0.5),
            "breakdown": step_breakdown(*(("vit_nano_patch4_28", {}) if quick else DEMO), 3 if quick else 200),
            "transposes": transposes([(64, 48)] if quick else [(544, 128), (544, 384), (6304, 384)], repeats),
            "softmax": softmaxes([(4, 9)] if quick else [(128, 17), (192, 65)], repeats)}


if __name__ == "__main__":
    main()
