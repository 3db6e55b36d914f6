"""Visual tokenizers and generators on mnist5k: VQ vs multi-scale VQ vs HART hybrid; raster / random /
masked AR vs VAR vs HART at matched parameters and training epochs.

    python benchmarks/generation.py           # writes benchmarks/results/generation.{md,json} + sample PNGs
    python benchmarks/generation.py --quick   # a tiny version (the test suite)

The full run trains 23 runs (three training seeds) in two processes: about 80 minutes on two free cores.

Protocol (mnist5k's fixed 4,000 / 1,000 split):
1. A judge: vitkit's own classifier (vit_mnist_patch7_28) trained on the 4,000 training digits (seed 0).
   Its pooled pre-logit features give a classifier-FID (vitkit.gen.metrics) and its predictions the
   generated-class accuracy. No download anywhere.
2. Tokenizers (same conv encoder/decoder and codebook): VQ-VAE (7x7 ids), VAR's multi-scale residual
   VQ (scales 1,2,3,4,5,7) and HART's hybrid tokenizer, which by HART's recipe starts from the
   multiscale run of its seed and trains its decoder only (the discrete tokens are the multiscale
   tokenizer's). Held-out reconstruction MSE / PSNR and codebook usage; for the hybrid, decoding the
   discrete tokens alone as well.
3. Generators at matched size (same width / depth / heads): raster, random-order and masked AR on the
   VQ ids, VAR on the multi-scale ids, HART on the hybrid tokens, each trained for the same epochs.
   ``--samples`` images per generator (an equal number of every class), drawn with 3 sampling seeds:
   classifier-FID against the 1,000 held-out digits, generated-class accuracy, transformer forward
   passes per image and sampling seconds per image (batch of 100, one thread). VAR and HART guide
   with the official linear ramp over the scales (none at the first, the CFG scale at the last: VAR's
   autoregressive_infer_cfg); the AR rows at the CFG scale throughout.
4. Training seeds: raster, VAR and HART, with their tokenizers, are trained once per ``--train-seeds``
   seed (0, 1, 2); their rows are mean +- std over the training seeds of each seed's mean over the
   sampling seeds. Random, masked and the rows at raster's training time (@time) are trained with the
   first seed only: their +- is over the sampling seeds.
5. Before and after: the rows of the results file generation.md was written from before issue 23
   (``--before``, the committed generation.json or the "before" it carries) are shown beside the new
   ones, with what changed, and the seed's expectations (VAR vs raster, HART vs VAR) are judged on
   both sets of numbers by one rule: FIDs within the two rows' summed spread are similar.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vitkit.bench.measure import load_before as measure_load_before, write_results
from vitkit.train.sweep import mean_std, run_all

RESULTS = Path(__file__).parent / "results"
JUDGE = "vit_mnist_patch7_28"
ORDERS = ("raster", "random", "masked")
SEEDED = ("raster", "var", "hart", "hart_sampled")   # rows trained with every --train-seeds seed
TOKENIZERS = ("vq", "multiscale", "hybrid")


# ---------------------------------------------------------------------------- jobs
def job(name: str, seed: int) -> str:
    """The job (and run folder) of row ``name`` trained with ``seed``: ``raster_s1``."""
    return f"{name}_s{seed}"


def row_of(job_name: str) -> tuple[str, int]:
    """``raster_s1`` -> ("raster", 1)."""
    name, _, seed = job_name.rpartition("_s")
    return name, int(seed)


def hart_rows(args) -> dict[str, str]:
    """HART's rows -> the residual head's training target (``--residual-target``): "gt" (teacher forcing,
    vitkit's default), "sampled" (HART's code), or both, as rows "hart" and "hart_sampled"."""
    if args.residual_target == "both":
        return {"hart": "gt", "hart_sampled": "sampled"}
    return {"hart": args.residual_target}


def row_seeds(args, name: str) -> list[int]:
    """The training seeds of a row: every ``--train-seeds`` for raster / VAR / HART, else the first."""
    return list(args.train_seeds) if name in SEEDED else list(args.train_seeds[:1])


def configs(args, work: Path) -> tuple[dict, dict, dict]:
    """(judge, tokenizer jobs, generator jobs): TrainConfig dicts by job name (``job(row, seed)``)."""
    common = dict(data="mnist5k", seed=0, num_threads=1, log_every=10_000, label_smoothing=0.0, amp=None)  # fp32
    judge = dict(common, model=JUDGE, epochs=args.judge_epochs, batch_size=64, lr=1e-3, warmup_epochs=2,
                 label_smoothing=0.1, model_args={"drop_path_rate": 0.1}, eval_every=args.judge_epochs,
                 augment={"rotate": 10, "translate": 0.1}, out=str(work / "judge"))
    tok_args = {"channels": list(args.channels), "embed_dim": args.embed_dim, "codebook_size": args.codebook}
    tokenizers = {}
    for seed in args.train_seeds:  # the tokenizers of every training seed: they are part of a generator's recipe
        for kind in TOKENIZERS:
            tokenizers[job(kind, seed)] = dict(common, seed=seed, task="vq", epochs=args.tok_epochs, batch_size=64,
                                               lr=1e-3, warmup_epochs=1, weight_decay=0.0, eval_every=args.tok_epochs,
                                               task_args={**tok_args, "kind": kind},
                                               out=str(work / "tokenizer" / job(kind, seed)))
        if args.hybrid == "from-multiscale":  # HART's recipe: the multiscale run's weights, decoder trained alone
            tokenizers[job("hybrid", seed)]["init"] = tokenizers[job("multiscale", seed)]["out"]
    size = {"dim": args.dim, "depth": args.depth, "num_heads": args.heads}
    gen_common = dict(common, epochs=args.gen_epochs, batch_size=64, lr=1e-3, warmup_epochs=1, weight_decay=0.05,
                      eval_every=args.gen_epochs)
    kinds = {**{o: ("ar", "vq", {"order": o}) for o in ORDERS}, "var": ("var", "multiscale", {}),
             **{h: ("hart", "hybrid", {"residual_target": t}) for h, t in hart_rows(args).items()}}
    gens = {}
    for name, (task, kind, extra) in kinds.items():
        for seed in row_seeds(args, name):
            gens[job(name, seed)] = dict(gen_common, seed=seed, task=task, out=str(work / "gen" / job(name, seed)),
                                         task_args={"tokenizer": tokenizers[job(kind, seed)]["out"], **extra, **size})
    return {"judge": judge}, tokenizers, gens


def phases(tokenizers: dict, gens: dict) -> list[list[str]]:
    """The jobs in an order that respects their inputs (a hybrid tokenizer its multiscale run, a generator
    its tokenizer): tokenizers; hybrids and VAR; HART (the longest) with the AR rows. The last VAR seed
    waits for HART's phase, so that two workers stay busy in both (3 seeds, at the run times of the committed
    generation.json: ~16 + 46 min of wall time instead of 29 + 39)."""
    def pick(jobs: dict, names: tuple[str, ...]) -> list[str]:
        return [j for j in jobs if row_of(j)[0] in names]
    var = pick(gens, ("var",))
    return [["judge"] + pick(tokenizers, ("vq", "multiscale")),
            pick(tokenizers, ("hybrid",)) + var[:-1],
            pick(gens, ("hart", "hart_sampled")) + var[-1:] + pick(gens, ORDERS)]


def train_all(args, work: Path) -> tuple[dict, dict, dict]:
    """Train (or reuse) every run: (judge result, tokenizer results, generator results) by job name."""
    judge, tokenizers, gens = configs(args, work)
    every = {**judge, **tokenizers, **gens}
    res: dict[str, dict] = {}
    for phase in phases(tokenizers, gens):
        res.update(run_all([(j, every[j]) for j in phase], args.jobs))
    # VAR / HART cost more per epoch (104 tokens a sequence, HART's head): rows at raster's training time too
    first = args.train_seeds[0]
    timed = {}
    for n in ("var", "hart"):
        per_epoch = (res[job(n, first)].get("seconds") or 1.0) / args.gen_epochs
        epochs = max(1, round(res[job("raster", first)].get("seconds", 0) / per_epoch)) if not args.quick else 1
        src = gens[job(n, first)]
        timed[job(f"{n}@time", first)] = {**src, "epochs": epochs, "eval_every": epochs,
                                          "out": str(Path(src["out"]).with_name(job(f"{n}_time", first)))}
    res.update(run_all(list(timed.items()), args.jobs))
    gens.update(timed)
    return res["judge"], {j: res[j] for j in tokenizers}, {j: res[j] for j in gens}


# ---------------------------------------------------------------------------- measuring
def held_out(run):
    import torch
    xs, ys = zip(*run.test_loader())
    return torch.cat(xs), torch.cat(ys)


def tokenizer_rows(tok_res: dict, work: Path) -> dict:
    """Held-out reconstruction of every tokenizer kind, mean over its training seeds (``*_std``: their std):
    PSNR of the discrete-only decode, and for the hybrid of the discrete + residual decode."""
    import torch

    from vitkit.gen.metrics import psnr
    from vitkit.train.run import load_run
    per_kind: dict[str, list[dict]] = {}
    for name, r in tok_res.items():
        kind, seed = row_of(name)
        run = load_run(work / "tokenizer" / name)
        x, _ = held_out(run)
        mean = torch.tensor(run.mean).view(1, -1, 1, 1)
        std = torch.tensor(run.std).view(1, -1, 1, 1)
        pix = lambda t: (t * std + mean).clamp(0, 1)  # noqa: E731
        with torch.no_grad():
            discrete = run.model.decode_ids(run.model.encode(x))
            row = {"seed": seed, "psnr_discrete": psnr(pix(discrete), pix(x)),
                   "mse_discrete": float(((discrete - x) ** 2).mean()), "usage": r.get("test_usage"),
                   "params": sum(p.numel() for p in run.model.parameters()),
                   "trainable": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
                   "train_seconds": r.get("seconds")}
            if kind == "hybrid":
                codes, residual = run.model.encode_hybrid(x)
                cont = run.model.decode_latent(run.model.quantizer.ids_to_fhat(codes) + residual)
                row.update(psnr_continuous=psnr(pix(cont), pix(x)), mse_continuous=float(((cont - x) ** 2).mean()))
        per_kind.setdefault(kind, []).append(row)
    return {kind: aggregate_tokenizer(rows) for kind, rows in per_kind.items()}


def aggregate_tokenizer(rows: list[dict]) -> dict:
    """One tokenizer kind over its training seeds: the mean of every number, ``<metric>_std`` for the PSNRs."""
    out = {"train_seeds": [r["seed"] for r in rows], "per_seed": rows}
    for key in rows[0]:
        if key != "seed" and all(isinstance(r.get(key), (int, float)) for r in rows):
            out[key] = statistics.mean(r[key] for r in rows)
    for key in ("psnr_discrete", "psnr_continuous"):
        if key in out:
            out[f"{key}_std"] = mean_std([r[key] for r in rows])[1]
    return out


def sampling_options(args, name: str) -> dict:
    """What a generator's row samples with beyond the CFG scale: MaskGIT's steps, and VAR / HART's guidance
    schedule over the scales (``--cfg-schedule``, default VAR's and HART's official linear ramp)."""
    if name == "masked":
        return {"steps": args.masked_steps}
    if name.split("@")[0] in ("var", "hart", "hart_sampled"):
        return {"cfg_schedule": args.cfg_schedule}
    return {}


def aggregate_generator(per_seed: dict[int, dict]) -> dict:
    """A row over its training seeds, from each seed's sampling-seed lists ("fid", "class_acc", "secs").

    One training seed: "fid" / "class_acc" are mean +- std over the sampling seeds (as before issue 23).
    Several: mean +- std over the training seeds of each seed's sampling mean; "fid_sampling_std" keeps
    the mean sampling spread. "fid_std_over" names which.
    """
    seeds = sorted(per_seed)
    many = len(seeds) > 1
    out = {"train_seeds": seeds, "fid_std_over": "training seeds" if many else "sampling seeds"}
    for key in ("fid", "class_acc"):
        lists = [per_seed[s][key] for s in seeds]
        out[key] = mean_std([statistics.mean(v) for v in lists]) if many else mean_std(lists[0])
        out[f"{key}_sampling_std"] = statistics.mean(mean_std(v)[1] for v in lists)
    out["sec_per_image"] = mean_std([t for s in seeds for t in per_seed[s]["secs"]])
    for key in ("train_seconds", "test_nll", "test_token_acc"):
        vals = [per_seed[s][key] for s in seeds if per_seed[s].get(key) is not None]
        out[key] = statistics.mean(vals) if vals else None
    first = per_seed[seeds[0]]
    out.update({k: first[k] for k in ("forward_passes", "head_passes", "params", "epochs")})
    out["per_seed"] = {str(s): {"fid": mean_std(per_seed[s]["fid"]), "class_acc": mean_std(per_seed[s]["class_acc"]),
                                "test_nll": per_seed[s].get("test_nll"), "train_seconds": per_seed[s].get("train_seconds")}
                       for s in seeds}
    return out


def sample_rows(args, gen_res: dict, work: Path) -> tuple[dict, dict]:
    import torch

    from vitkit.gen.metrics import class_accuracy, classifier_fid
    from vitkit.train.run import load_run
    from vitkit.viz import image_grid
    torch.set_num_threads(1)
    judge = load_run(work / "judge")
    real, real_y = held_out(judge)
    k = len(judge.classes)
    labels = torch.arange(args.samples) % k
    floor = {}
    # the floor: FID of real training digits vs the held-out set
    from vitkit import data as vdata
    bundle = vdata.build("mnist5k")
    train_x = next(iter(vdata.make_loader(bundle.train, batch_size=len(real), shuffle=True, seed=0,
                                          transform=vdata.eval_transform(bundle))))[0]
    floor["real train digits"] = classifier_fid(judge.model, real, train_x)
    per_row: dict[str, dict[int, dict]] = {}
    for name in gen_res:
        row, train_seed = row_of(name)
        run = load_run(work / "gen" / name.replace("@time", "_time"))
        got = {"fid": [], "class_acc": [], "secs": []}
        for seed in args.seeds:
            t0 = time.perf_counter()
            images = torch.cat([run.model.generate(lab, cfg_scale=args.cfg_scale,
                                                   generator=torch.Generator().manual_seed(seed + 1000 * i),
                                                   **sampling_options(args, row))
                                for i, lab in enumerate(labels.split(100))])
            got["secs"].append((time.perf_counter() - t0) / len(labels))
            got["fid"].append(classifier_fid(judge.model, real, images))
            got["class_acc"].append(class_accuracy(judge.model, images, labels))
            if seed == args.seeds[0] and train_seed == args.train_seeds[0]:
                image_grid(images[:100], k, Path(args.out) / f"generation_{row.replace('@', '_')}.png",
                           run.mean, run.std, scale=2)
        gen = run.model.generator
        per_row.setdefault(row, {})[train_seed] = {
            **got, "forward_passes": gen.last_forward_passes, "head_passes": getattr(gen, "last_head_passes", None),
            "params": sum(p.numel() for p in gen.parameters()), "train_seconds": gen_res[name].get("seconds"),
            "epochs": run.train_cfg.epochs, "test_nll": gen_res[name].get("test_nll"),
            "test_token_acc": gen_res[name].get("test_acc")}
    return {row: aggregate_generator(seeds) for row, seeds in per_row.items()}, floor


# ---------------------------------------------------------------------------- before / after
def load_before(path: Path | None) -> dict | None:
    """The rows generation.md showed before issue 23's official defaults (`measure.load_before`)."""
    return measure_load_before(path, lambda saved: {
        "args": saved.get("args", {}), "recipe": recipe(saved.get("args", {})),
        "judge_test_acc": saved.get("judge_test_acc"), "tokenizers": saved.get("tokenizers", {}),
        "generators": saved.get("generators", {}), "fid_floor": saved.get("fid_floor", {})})


# The recipe choices issue 23 changed, as a results file written before it had them.
PRE_ISSUE_23 = {"train_seeds": [0], "cfg_schedule": "constant", "hybrid": "joint", "residual_target": "gt",
                "head_condition": "table"}
WORDS = {"cfg_schedule": {"constant": "constant guidance over VAR / HART's scales",
                          "linear": "guidance ramped linearly over the scales (VAR's, HART's)"},
         "hybrid": {"joint": "hybrid tokenizer trained jointly from scratch",
                    "from-multiscale": "hybrid tokenizer from the multiscale one, decoder trained alone (HART's)"},
         "residual_target": {"gt": "head trained on the ground-truth tokens",
                             "sampled": "head trained on the transformer's sampled tokens (HART's)",
                             "both": "head trained on the ground-truth tokens (hart) and on sampled ones (hart_sampled)"},
         "head_condition": {"table": "head conditioned on an embedding table of its own",
                            "word_embed": "head conditioned on word_embed(code vector) (HART's)"}}


def recipe(args: dict) -> dict:
    """The recipe choices of a run's args (a file from before issue 23 names none: PRE_ISSUE_23's)."""
    return {**PRE_ISSUE_23, **{k: args[k] for k in PRE_ISSUE_23 if k in args}}


def changes(now: dict, old: dict) -> dict[str, str]:
    """What differs between two recipes, by row (tokenizers as ``tokenizer:KIND``)."""
    def note(key: str, value: str | None = None) -> str:
        value = now[key] if value is None else value
        return "" if value == old[key] else f"{WORDS[key][value]} (before: {WORDS[key][old[key]]})"
    n_now, n_old = len(now["train_seeds"]), len(old["train_seeds"])
    seeds = f"{n_now} training seeds (before: {n_old})" if n_now != n_old else ""
    out = {}
    for row in ("raster", "var", "hart", "hart_sampled", "random", "masked", "var@time", "hart@time"):
        notes = [seeds if row in SEEDED else ""]
        if row.startswith(("var", "hart")):
            notes.append(note("cfg_schedule"))
        if row.startswith("hart"):
            hart_target = "gt" if now["residual_target"] == "both" else now["residual_target"]  # the "hart" row's
            notes += [note("hybrid"), note("head_condition"), note("residual_target", hart_target) if row == "hart" else ""]
        if row == "hart_sampled":
            notes.append("a new row: " + WORDS["residual_target"]["sampled"])
        out[row] = "; ".join(n for n in notes if n) or "same recipe"
    for kind in TOKENIZERS:
        notes = [seeds] + ([note("hybrid")] if kind == "hybrid" else [])
        out[f"tokenizer:{kind}"] = "; ".join(n for n in notes if n) or "same recipe"
    return out


# ---------------------------------------------------------------------------- verdicts
def fid_verdict(g: dict, a: str, b: str) -> dict:
    """FID of row a vs row b: "similar" when the difference is within the two rows' summed spread (their
    "fid" +-: training seeds when a row has several, else sampling seeds), else "better" / "worse" for a."""
    (fa, sa), (fb, sb) = g[a]["fid"], g[b]["fid"]
    verdict = "similar" if abs(fa - fb) <= sa + sb else ("better" if fa < fb else "worse")
    return {"a": a, "b": b, "fid_a": fa, "fid_b": fb, "spread": sa + sb, "verdict": verdict,
            "over": " / ".join(sorted({g[x].get("fid_std_over", "sampling seeds") for x in (a, b)}))}


def verdicts(res: dict) -> dict[str, dict]:
    """The seed's expectations, judged on a results dict (new or "before"): by claim."""
    g, t, out = res.get("generators", {}), res.get("tokenizers", {}), {}
    h = t.get("hybrid", {})
    if "psnr_continuous" in h:
        out["hybrid residual > discrete"] = {"holds": h["psnr_continuous"] > h["psnr_discrete"],
                                             "continuous": h["psnr_continuous"], "discrete": h["psnr_discrete"]}
    for fast, slow in (("var", "raster"), ("masked", "raster")):
        if fast in g and slow in g:
            out[f"{fast} vs {slow}"] = {**fid_verdict(g, fast, slow),
                                        "passes": (g[fast]["forward_passes"], g[slow]["forward_passes"]),
                                        "ms_per_image": tuple(1e3 * g[x]["sec_per_image"][0] for x in (fast, slow))}
    for a, b in (("hart", "var"), ("hart_sampled", "var"), ("hart@time", "var@time")):
        if a in g and b in g:
            out[f"{a} vs {b}"] = {**fid_verdict(g, a, b),
                                  "class_acc": (g[a]["class_acc"][0], g[b]["class_acc"][0])}
    return out


def _fid_words(v: dict) -> str:
    if v["verdict"] == "similar":
        return f"similar FID ({v['fid_a']:.2f} vs {v['fid_b']:.2f}, within the spread over {v['over']})"
    return f"{v['verdict']} FID ({v['fid_a']:.2f} vs {v['fid_b']:.2f})"


def claims(res: dict) -> list[str]:
    """Each expectation of the seed against the measured rows, in words."""
    out = []
    for name, v in verdicts(res).items():
        if name == "hybrid residual > discrete":
            out.append(f"- HART's residual path reconstructs better than its discrete tokens alone: "
                       f"{'holds' if v['holds'] else 'does NOT hold'} ({v['continuous']:.2f} vs {v['discrete']:.2f} dB).")
        elif "raster" in name:
            fast, slow = name.split(" vs ")
            tf, ts = v["ms_per_image"]
            why = " (slower despite fewer passes: each pass here handles many tokens, while a KV-cached raster pass " \
                  "handles one)" if tf > ts else ""
            out.append(f"- {fast} needs fewer forward passes than {slow}: {v['passes'][0]} vs {v['passes'][1]}, at "
                       f"{_fid_words(v)}; wall time per image {tf:.1f} vs {ts:.1f} ms{why}.")
        else:
            a, b = name.split(" vs ")
            out.append(f"- {a} vs {b} (HART better than VAR alone is expected): {_fid_words(v)}; class accuracy "
                       f"{100 * v['class_acc'][0]:.1f}% vs {100 * v['class_acc'][1]:.1f}%.")
    return out


# ---------------------------------------------------------------------------- report
def _pm(t, f=1.0, d=1) -> str:
    return f"{f * t[0]:.{d}f} +- {f * t[1]:.{d}f}"


def _num(x, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def before_after(res: dict, args) -> list[str]:
    """Markdown: the "before" rows beside the new ones, with what changed, and the verdicts on both."""
    before = res.get("before")
    if not before:
        return []
    old = before.get("recipe") or recipe(before.get("args", {}))
    what = changes(res["recipe"], old)
    old_t, new_t = before.get("tokenizers", {}), res["tokenizers"]
    old_g, new_g = before.get("generators", {}), res["generators"]
    lines = ["## Before and after issue 23 (the papers' official defaults)", "",
             f"Before: `{before.get('source', '?')}` (judge held-out top-1 "
             f"{100 * (before.get('judge_test_acc') or 0):.1f}%): "
             + "; ".join(WORDS[k][old[k]] for k in WORDS) + f"; {len(old['train_seeds'])} training seed(s). "
             "After: this run, as the tables above. A row's +- is over its training seeds when it has several, "
             "else over its sampling seeds.", "",
             "| tokenizer | PSNR discrete before | after | PSNR discrete + residual before | after | what changed |",
             "|---|---|---|---|---|---|"]
    for kind in TOKENIZERS:
        o, n = old_t.get(kind, {}), new_t.get(kind, {})
        lines.append(f"| {kind} | {_num(o.get('psnr_discrete'))} | {_num(n.get('psnr_discrete'))} | "
                     f"{_num(o.get('psnr_continuous'))} | {_num(n.get('psnr_continuous'))} | "
                     f"{what[f'tokenizer:{kind}']} |")
    lines += ["", "| generator | FID before | FID after | class acc % before | after | token NLL before | after "
              "| what changed |", "|---|---|---|---|---|---|---|---|"]
    for name in list(dict.fromkeys([*old_g, *new_g])):
        o, n = old_g.get(name), new_g.get(name)
        cell = lambda r, k, f=1.0, d=2: _pm(r[k], f, d) if r else "-"  # noqa: E731
        lines.append(f"| {name} | {cell(o, 'fid')} | {cell(n, 'fid')} | {cell(o, 'class_acc', 100, 1)} | "
                     f"{cell(n, 'class_acc', 100, 1)} | {_num((o or {}).get('test_nll'), '.3f')} | "
                     f"{_num((n or {}).get('test_nll'), '.3f')} | {what.get(name, 'a new row')} |")
    old_v, new_v = verdicts(before), verdicts(res)
    lines += ["", "The seed's expectations, judged on both sets of numbers (same rule):", "",
              "| expectation | before | after |", "|---|---|---|"]
    word = lambda v: ("holds" if v["holds"] else "does not hold") if "holds" in v else (  # noqa: E731
        f"{v['verdict']} FID ({v['fid_a']:.2f} vs {v['fid_b']:.2f})")
    for name in list(dict.fromkeys([*old_v, *new_v])):
        lines.append(f"| {name} | {word(old_v[name]) if name in old_v else '-'} | "
                     f"{word(new_v[name]) if name in new_v else '-'} |")
    return lines + [""]


def markdown(res: dict, args) -> str:
    seeds = args.train_seeds
    lines = ["# Generation on mnist5k: tokenizers and generators", "",
             f"Written by `python benchmarks/generation.py{' --quick' if args.quick else ''}` in "
             f"{res['minutes']:.0f} min (CPU, one thread per job). Judge: `{JUDGE}` trained on the 4,000 training "
             f"digits, held-out top-1 {100 * (res['judge_test_acc'] or 0):.1f}%.", "",
             f"## Tokenizers (held-out reconstruction, mean over {len(seeds)} training seed(s))", "",
             "| tokenizer | PSNR discrete (dB) | PSNR discrete + residual (dB) | codebook usage | params | trainable |",
             "|---|---|---|---|---|---|"]
    for kind, r in res["tokenizers"].items():
        cont = f"{r['psnr_continuous']:.2f} +- {r['psnr_continuous_std']:.2f}" if "psnr_continuous" in r else "-"
        lines.append(f"| {kind} | {r['psnr_discrete']:.2f} +- {r['psnr_discrete_std']:.2f} | {cont} | "
                     f"{r['usage']:.2f} | {r['params'] / 1e6:.2f}M | {r['trainable'] / 1e6:.2f}M |")
    lines += ["", f"## Generators ({args.samples} samples each, {len(args.seeds)} sampling seeds, CFG scale "
              f"{args.cfg_scale}, {args.cfg_schedule} over VAR / HART's scales; width {args.dim}, depth {args.depth}, "
              f"{args.gen_epochs} epochs each; raster / VAR / HART over training seeds {seeds})", "",
              "| generator | classifier-FID (lower is better) | generated-class accuracy (%) | +- over | "
              "forward passes / image | ms / image | params | epochs | train s | held-out token NLL |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["generators"].items():
        fp = str(r["forward_passes"]) + (f" + {r['head_passes']} head" if r.get("head_passes") else "")
        over = r.get("fid_std_over", "sampling seeds")
        if over == "training seeds":
            over = f"{len(r['train_seeds'])} training seeds (sampling: +- {r['fid_sampling_std']:.2f} FID)"
        lines.append(f"| {name} | {_pm(r['fid'], 1, 2)} | {_pm(r['class_acc'], 100)} | {over} | {fp} | "
                     f"{_pm(r['sec_per_image'], 1000)} | {r['params'] / 1e6:.2f}M | {r.get('epochs', '-')} | "
                     f"{r['train_seconds'] or 0:.0f} | {r['test_nll'] or float('nan'):.3f} |")
    lines += ["", "FID floors against the same held-out digits: " + ", ".join(
        f"{k} {v:.2f}" for k, v in res["fid_floor"].items()), "",
              "Masked AR's NLL is scored on masked tokens only and VAR/HART's over all scales: NLLs compare "
              "within a row's family, not across.", ""]
    lines += before_after(res, args)
    lines += ["## The seed's expectations, checked by the numbers above", ""] + claims(res) + [""]
    for name in res["generators"]:
        lines.append(f"![{name}](generation_{name.replace('@', '_')}.png)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="runs/gen_bench")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--judge-epochs", type=int, default=15, dest="judge_epochs")
    p.add_argument("--tok-epochs", type=int, default=15, dest="tok_epochs")
    p.add_argument("--gen-epochs", type=int, default=20, dest="gen_epochs")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32], help="tokenizer conv widths")
    p.add_argument("--embed-dim", type=int, default=8, dest="embed_dim", help="tokenizer latent / code width")
    p.add_argument("--codebook", type=int, default=256)
    p.add_argument("--hybrid", choices=["from-multiscale", "joint"], default="from-multiscale",
                   help="HART's hybrid tokenizer: HART's recipe (the multiscale tokenizer's weights, encoder, "
                        "quant_conv and quantizer frozen, the decoder trained), or everything trained jointly "
                        "from scratch (generation.md's rows before issue 23)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2], dest="train_seeds",
                   help="training seeds of raster, VAR and HART (and their tokenizers); the other rows train "
                        "with the first")
    p.add_argument("--cfg-scale", type=float, default=2.0, dest="cfg_scale",
                   help="CFG scale s (u + s (c - u)); VAR / HART reach it at their last scale")
    p.add_argument("--cfg-schedule", choices=["linear", "constant"], default="linear", dest="cfg_schedule",
                   help="VAR / HART guidance over the scales: the official linear ramp (none at the first scale), "
                        "or s at every scale (what generation.md's rows before issue 23 used)")
    p.add_argument("--masked-steps", type=int, default=8, dest="masked_steps")
    p.add_argument("--residual-target", choices=["gt", "sampled", "both"], default="gt", dest="residual_target",
                   help="what HART's residual head trains on: the ground-truth last-scale tokens (vitkit's default), "
                        "the transformer's sampled ones (HART's code), or both (rows hart and hart_sampled)")
    p.add_argument("--before", type=Path, default=None,
                   help="results JSON whose rows are shown as 'before' (default: benchmarks/results/generation.json, "
                        "or the 'before' it carries; none with --quick)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny settings, for the test suite")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.judge_epochs = args.tok_epochs = args.gen_epochs = 1
        args.channels, args.codebook, args.dim, args.depth, args.heads = [8, 16, 16], 32, 32, 1, 2
        args.embed_dim = 8
        args.samples, args.seeds, args.train_seeds, args.jobs = 20, [0], args.train_seeds[:1], 1
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    before = load_before(args.before or (None if args.quick else RESULTS / "generation.json"))  # read before writing
    t_start = time.time()
    judge, tok_res, gen_res = train_all(args, work)
    tok_rows = tokenizer_rows(tok_res, work)
    rows, floor = sample_rows(args, gen_res, work)
    results = {"protocol": __doc__, "args": vars(args), "recipe": {**recipe(vars(args)), "head_condition": "word_embed"},
               "judge_test_acc": judge.get("test_acc"),
               "tokenizers": tok_rows, "generators": rows, "fid_floor": floor,
               "minutes": (time.time() - t_start) / 60, "before": before}
    results["verdicts"] = {"after": verdicts(results), "before": verdicts(before) if before else None}
    stem = "generation_quick" if args.quick else "generation"
    write_results(out, stem, results, markdown(results, args))
    return results


if __name__ == "__main__":
    main()
