"""``vitkit sparsevit-search``: SparseViT's latency-constrained search (Chen et al. 2023, Sec. 3.2).

One window sparsity per pair of blocks, non-decreasing within a stage, chosen by evolutionary search
(or random search, its baseline) on a latency table measured here; prints the Pareto table and the
best config, which must be faster than the dense model to be recommended.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import CLIError, nonneg_float, positive_float, positive_int, set_threads


def add_arguments(sv: argparse.ArgumentParser) -> None:
    sv.add_argument("--run", required=True, help="a Swin or SparseViT classifier run folder")
    sv.add_argument("--latency-budget", type=positive_float, required=True, dest="latency_budget",
                    help="the largest latency a config may have, in milliseconds")
    sv.add_argument("--min-latency", type=nonneg_float, default=0.0, dest="min_latency",
                    help="the smallest latency a config may have, ms (the paper's latency window; default 0)")
    sv.add_argument("--method", choices=["evolution", "random"], default="evolution",
                    help="evolutionary search (the paper's) or random search (its baseline)")
    sv.add_argument("--samples", type=positive_int, default=200,
                    help="configs to evaluate (inside the latency window): the budget of either method")
    sv.add_argument("--population", type=positive_int, default=100, help="evolution: population size")
    sv.add_argument("--parents", type=positive_int, default=25, help="evolution: parents kept per generation")
    sv.add_argument("--mutation-prob", type=float, default=0.1, dest="mutation_prob",
                    help="evolution: probability that a pair's sparsity mutates")
    sv.add_argument("--choices", help="comma-separated sparsity levels per pair of blocks (default 0,0.1,...,0.8)")
    sv.add_argument("--batch", type=positive_int, default=1, help="batch size the latency is measured at")
    sv.add_argument("--repeats", type=positive_int, default=5, help="timing repeats per table entry (median)")
    sv.add_argument("--data", help="data spec to score on (default: the run's test split)")
    sv.add_argument("--weights", choices=["ema", "model"])
    sv.add_argument("--threads", type=positive_int)
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--all", action="store_true", help="print every evaluated config, not only the Pareto front")
    sv.add_argument("--json", help="write the latency table and the search rows to this file")
    sv.add_argument("--table", help="reuse the latency table of an earlier --json file instead of measuring one "
                    "(search several budgets on one measurement)")


def _read_table(path: str, choices: list[float] | None, model) -> dict:
    """A latency table from an earlier --json, checked against the run's model and --choices."""
    from ..models.sparsevit import table_latency_fn
    try:
        table = json.loads(Path(path).read_text())
        table = table.get("table", table) if isinstance(table, dict) else table
        table_choices = [float(c) for c in table["choices"]]
        table_latency_fn(table)(table_choices[0])  # base_ms and every row are there
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise CLIError(f"--table {path}: not a latency table written by --json ({e})") from e
    if choices is not None and sorted(choices) != sorted(table_choices):
        raise CLIError(f"--choices {choices} differ from the table's {table_choices}; drop --choices or "
                       "measure a new table")
    if list(table["pairs_per_stage"]) != list(model.pairs_per_stage):
        raise CLIError(f"--table has {table['pairs_per_stage']} block pairs per stage, the run's model "
                       f"{list(model.pairs_per_stage)}")
    return table


def cmd_sparsevit_search(args) -> int:
    import torch

    from ..models.sparsevit import (SPARSITY_CHOICES, SparseViT, accuracy_fn, format_sparsity, format_table,
                                    measure_latency_table, search, table_latency_fn)
    from ..models.swin import SwinTransformer
    from ..train.run import load_run
    set_threads(args.threads)
    if not 0 <= args.mutation_prob <= 1:
        raise CLIError(f"--mutation-prob must be in [0, 1], got {args.mutation_prob}")
    if args.min_latency > args.latency_budget:
        raise CLIError(f"--min-latency {args.min_latency} is above --latency-budget {args.latency_budget}")
    run = load_run(args.run, args.weights)
    model = run.model.eval()
    if not isinstance(model, SparseViT):
        if not isinstance(model, SwinTransformer):
            raise CLIError(f"{args.run} holds a {type(model).__name__}; the search needs a Swin or SparseViT run "
                           "(e.g. vitkit train --model sparsevit_swin_nano_patch2_window4_28)")
        model = SparseViT.from_swin(model)
    try:
        choices = [float(c) for c in args.choices.split(",")] if args.choices else None
    except ValueError:
        raise CLIError(f"--choices must be comma-separated numbers, got {args.choices!r}") from None
    loader = run.eval_loader(args.data, 256)
    if args.table:
        table = _read_table(args.table, choices, model)
    else:
        x = next(iter(loader))[0][:args.batch]
        print(f"vitkit: measuring a per-pair latency table (batch {len(x)}, {torch.get_num_threads()} threads) ...",
              file=sys.stderr)
        with torch.inference_mode():
            table = measure_latency_table(model, x, choices or list(SPARSITY_CHOICES), repeats=args.repeats)
    latency = table_latency_fn(table)
    dense_ms = latency(0.0)
    accuracy = accuracy_fn(loader)
    best, rows = search(model, accuracy, latency, args.latency_budget, args.samples, table["choices"],
                        seed=args.seed, min_ms=args.min_latency, method=args.method,
                        population_size=args.population, num_parents=args.parents, mutation_prob=args.mutation_prob)
    model.set_sparsity(0.0)
    dense_acc = accuracy(model)
    pairs = model.pairs_per_stage
    print(f"dense: {dense_ms:.2f} ms (predicted from the table), top-1 {dense_acc:.4f} on "
          f"{args.data or 'the test split'}")
    print(f"window {args.min_latency:g}-{args.latency_budget:g} ms, {args.method} search: {len(rows)} configs "
          f"evaluated; {'Pareto front' if not args.all else 'all'}:")
    print(format_table(rows, pareto_only=not args.all, pairs=pairs))
    faster = [r for r in rows if r["latency_ms"] < dense_ms]
    if not faster:
        print(f"best: none; no config in the window is faster than dense ({dense_ms:.2f} ms): keep the dense "
              "model, or lower --latency-budget")
        best = None
    else:
        top = max(faster, key=lambda r: (r["score"], -r["latency_ms"]))
        best = top["sparsity"]
        print(f"best: {format_sparsity(best, pairs)} -> {top['latency_ms']:.2f} ms "
              f"({dense_ms / top['latency_ms']:.2f}x faster than dense), top-1 {top['score']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "run": str(run.path), "budget_ms": args.latency_budget, "min_ms": args.min_latency,
            "method": args.method, "table": table, "dense_ms": dense_ms, "dense_score": dense_acc,
            "best": list(best) if best is not None else None, "rows": rows}, indent=2))
    return 0
