"""Visual tokenizers and generators on mnist5k: VQ vs multi-scale VQ vs HART hybrid; raster / random /
masked AR vs VAR vs HART at matched parameters and training epochs.

    python benchmarks/generation.py           # writes benchmarks/results/generation.{md,json} + sample PNGs
    python benchmarks/generation.py --quick   # a tiny version (the test suite)

Protocol (mnist5k's fixed 4,000 / 1,000 split):
1. A judge: vitkit's own classifier (vit_mnist_patch7_28) trained on the 4,000 training digits. Its
   pooled pre-logit features give a classifier-FID (vitkit.gen.metrics) and its predictions the
   generated-class accuracy. No download anywhere.
2. Tokenizers (one run each, same conv encoder/decoder and codebook): VQ-VAE (7x7 ids), VAR's
   multi-scale residual VQ (scales 1,2,3,4,5,7) and HART's hybrid tokenizer, which by HART's recipe
   starts from the multiscale run and trains its decoder only (the discrete tokens are the multiscale
   tokenizer's). Held-out reconstruction MSE / PSNR and codebook usage; for the hybrid, decoding the
   discrete tokens alone as well.
3. Generators at matched size (same width / depth / heads): raster, random-order and masked AR on the
   VQ ids, VAR on the multi-scale ids, HART on the hybrid tokens, each trained for the same epochs.
   ``--samples`` images per generator (an equal number of every class), drawn with 3 sampling seeds:
   classifier-FID against the 1,000 held-out digits, generated-class accuracy, transformer forward
   passes per image and sampling seconds per image (batch of 100, one thread), mean +- std over
   the sampling seeds. VAR and HART guide with the official linear ramp over the scales (none at
   the first, the CFG scale at the last: VAR's autoregressive_infer_cfg); the AR rows at the CFG
   scale throughout. Training is one run per model (seed 0): the seeds measure sampling noise only.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from vitkit.bench.measure import write_results
from vitkit.train.sweep import mean_std, run_all

RESULTS = Path(__file__).parent / "results"
JUDGE = "vit_mnist_patch7_28"
ORDERS = ("raster", "random", "masked")


def configs(args, work: Path) -> tuple[dict, dict, dict]:
    common = dict(data="mnist5k", seed=0, num_threads=1, log_every=10_000, label_smoothing=0.0)
    judge = dict(common, model=JUDGE, epochs=args.judge_epochs, batch_size=64, lr=1e-3, warmup_epochs=2,
                 label_smoothing=0.1, model_args={"drop_path_rate": 0.1}, eval_every=args.judge_epochs,
                 augment={"rotate": 10, "translate": 0.1}, out=str(work / "judge"))
    tok_args = {"channels": list(args.channels), "embed_dim": args.embed_dim, "codebook_size": args.codebook}
    tokenizers = {kind: dict(common, task="vq", epochs=args.tok_epochs, batch_size=64, lr=1e-3, warmup_epochs=1,
                             weight_decay=0.0, eval_every=args.tok_epochs, task_args={**tok_args, "kind": kind},
                             out=str(work / "tokenizer" / kind))
                  for kind in ("vq", "multiscale", "hybrid")}
    if args.hybrid == "from-multiscale":  # HART's recipe: the multiscale run's weights, decoder trained alone
        tokenizers["hybrid"]["init"] = tokenizers["multiscale"]["out"]
    size = {"dim": args.dim, "depth": args.depth, "num_heads": args.heads}
    gen_common = dict(common, epochs=args.gen_epochs, batch_size=64, lr=1e-3, warmup_epochs=1, weight_decay=0.05,
                      eval_every=args.gen_epochs)
    gens = {o: dict(gen_common, task="ar", task_args={"tokenizer": tokenizers["vq"]["out"], "order": o, **size},
                    out=str(work / "gen" / o)) for o in ORDERS}
    gens["var"] = dict(gen_common, task="var", task_args={"tokenizer": tokenizers["multiscale"]["out"], **size},
                       out=str(work / "gen" / "var"))
    for name, target in hart_rows(args).items():
        gens[name] = dict(gen_common, task="hart", out=str(work / "gen" / name),
                          task_args={"tokenizer": tokenizers["hybrid"]["out"], "residual_target": target, **size})
    return {"judge": judge}, tokenizers, gens


def hart_rows(args) -> dict[str, str]:
    """HART's rows -> the residual head's training target (``--residual-target``): "gt" (teacher forcing,
    vitkit's default), "sampled" (HART's code), or both, as rows "hart" and "hart_sampled"."""
    if args.residual_target == "both":
        return {"hart": "gt", "hart_sampled": "sampled"}
    return {"hart": args.residual_target}


def held_out(run):
    import torch
    xs, ys = zip(*run.test_loader())
    return torch.cat(xs), torch.cat(ys)


def tokenizer_rows(tok_res: dict, work: Path) -> dict:
    """Held-out reconstruction: the trainer's metrics line, plus PSNR of the discrete-only decode."""
    import torch

    from vitkit.gen.metrics import psnr
    from vitkit.train.run import load_run
    rows = {}
    for kind, r in tok_res.items():
        run = load_run(work / "tokenizer" / kind)
        x, _ = held_out(run)
        mean = torch.tensor(run.mean).view(1, -1, 1, 1)
        std = torch.tensor(run.std).view(1, -1, 1, 1)
        pix = lambda t: (t * std + mean).clamp(0, 1)  # noqa: E731
        with torch.no_grad():
            ids = run.model.encode(x)
            discrete = run.model.decode_ids(ids)
            row = {"psnr_discrete": psnr(pix(discrete), pix(x)), "mse_discrete": float(((discrete - x) ** 2).mean()),
                   "usage": r.get("test_usage"), "params": sum(p.numel() for p in run.model.parameters()),
                   "train_seconds": r.get("seconds")}
            if kind == "hybrid":
                codes, residual = run.model.encode_hybrid(x)
                cont = run.model.decode_latent(run.model.quantizer.ids_to_fhat(codes) + residual)
                row.update(psnr_continuous=psnr(pix(cont), pix(x)), mse_continuous=float(((cont - x) ** 2).mean()))
        rows[kind] = row
    return rows


def sampling_options(args, name: str) -> dict:
    """What a generator's row samples with beyond the CFG scale: MaskGIT's steps, and VAR / HART's guidance
    schedule over the scales (``--cfg-schedule``, default VAR's and HART's official linear ramp)."""
    if name == "masked":
        return {"steps": args.masked_steps}
    if name.split("@")[0] in ("var", "hart", "hart_sampled"):
        return {"cfg_schedule": args.cfg_schedule}
    return {}


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
    rows, floor = {}, {}
    # the floors: FID of real training digits, and of each tokenizer's reconstructions, vs the held-out set
    from vitkit import data as vdata
    bundle = vdata.build("mnist5k")
    train_x = next(iter(vdata.make_loader(bundle.train, batch_size=len(real), shuffle=True, seed=0,
                                          transform=vdata.eval_transform(bundle))))[0]
    floor["real train digits"] = classifier_fid(judge.model, real, train_x)
    for name in gen_res:
        run = load_run(work / "gen" / name.replace("@time", "_time"))
        fids, accs, secs = [], [], []
        passes = None
        for seed in args.seeds:
            t0 = time.perf_counter()
            images = torch.cat([run.model.generate(lab, cfg_scale=args.cfg_scale,
                                                   generator=torch.Generator().manual_seed(seed + 1000 * i),
                                                   **sampling_options(args, name))
                                for i, lab in enumerate(labels.split(100))])
            secs.append((time.perf_counter() - t0) / len(labels))
            passes = run.model.generator.last_forward_passes
            fids.append(classifier_fid(judge.model, real, images))
            accs.append(class_accuracy(judge.model, images, labels))
            if seed == args.seeds[0]:
                image_grid(images[:100], k, Path(args.out) / f"generation_{name.replace('@', '_')}.png",
                           run.mean, run.std, scale=2)
        rows[name] = {"fid": mean_std(fids), "class_acc": mean_std(accs), "sec_per_image": mean_std(secs),
                      "forward_passes": passes, "head_passes": getattr(run.model.generator, "last_head_passes", None),
                      "params": sum(p.numel() for p in run.model.generator.parameters()),
                      "train_seconds": gen_res[name].get("seconds"), "epochs": run.train_cfg.epochs,
                      "test_nll": gen_res[name].get("test_nll"),
                      "test_token_acc": gen_res[name].get("test_acc")}
    return rows, floor


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
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cfg-scale", type=float, default=2.0, dest="cfg_scale",
                   help="CFG scale s (u + s (c - u)); VAR / HART reach it at their last scale")
    p.add_argument("--cfg-schedule", choices=["linear", "constant"], default="linear", dest="cfg_schedule",
                   help="VAR / HART guidance over the scales: the official linear ramp (none at the first scale), "
                        "or s at every scale (what generation.md's rows before issue 23 used)")
    p.add_argument("--masked-steps", type=int, default=8, dest="masked_steps")
    p.add_argument("--residual-target", choices=["gt", "sampled", "both"], default="gt", dest="residual_target",
                   help="what HART's residual head trains on: the ground-truth last-scale tokens (vitkit's default), "
                        "the transformer's sampled ones (HART's code), or both (rows hart and hart_sampled)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny settings, for the test suite")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.judge_epochs = args.tok_epochs = args.gen_epochs = 1
        args.channels, args.codebook, args.dim, args.depth, args.heads = [8, 16, 16], 32, 32, 1, 2
        args.embed_dim = 8
        args.samples, args.seeds, args.jobs = 20, [0], 1
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    judge, tokenizers, gens = configs(args, work)
    first = run_all([("judge", judge["judge"])] + [(k, v) for k, v in tokenizers.items() if k != "hybrid"], args.jobs)
    # the hybrid tokenizer may start from the multiscale run: it trains beside the generators that do not need it
    harts = hart_rows(args)
    gen_res = run_all([("hybrid", tokenizers["hybrid"])] + [(k, v) for k, v in gens.items() if k not in harts],
                      args.jobs)
    first["hybrid"] = gen_res.pop("hybrid")
    gen_res.update(run_all([(k, gens[k]) for k in harts], args.jobs))
    # VAR / HART cost more per epoch (104 tokens a sequence, HART's head): rows at raster's training time too
    per_epoch = {n: (gen_res[n].get("seconds") or 1.0) / args.gen_epochs for n in gen_res}
    timed = {}
    for n in ("var", "hart"):
        epochs = max(1, round(gen_res["raster"].get("seconds", 0) / per_epoch[n])) if not args.quick else 1
        timed[f"{n}@time"] = {**gens[n], "epochs": epochs, "eval_every": epochs, "out": gens[n]["out"] + "_time"}
    gen_res.update(run_all(list(timed.items()), args.jobs))
    tok_rows = tokenizer_rows({k: first[k] for k in tokenizers}, work)
    rows, floor = sample_rows(args, gen_res, work)
    results = {"protocol": __doc__, "args": vars(args), "judge_test_acc": first["judge"].get("test_acc"),
               "tokenizers": tok_rows, "generators": rows, "fid_floor": floor,
               "minutes": (time.time() - t_start) / 60}
    stem = "generation_quick" if args.quick else "generation"
    write_results(out, stem, results, markdown(results, args))
    return results


def claims(res: dict) -> list[str]:
    """Each expectation of the seed against the measured rows: holds, or does not (FID differences
    within the two rows' summed sampling spread count as a tie)."""
    g, t = res["generators"], res["tokenizers"]

    def cmp(a: str, b: str) -> str:  # FID of a vs b
        (fa, sa), (fb, sb) = g[a]["fid"], g[b]["fid"]
        if abs(fa - fb) <= sa + sb:
            return f"similar FID ({fa:.2f} vs {fb:.2f}, within the sampling spread)"
        return f"{'better' if fa < fb else 'worse'} FID ({fa:.2f} vs {fb:.2f})"

    out = []
    if "hybrid" in t and "psnr_continuous" in t["hybrid"]:
        h = t["hybrid"]
        out.append(f"- HART's residual path reconstructs better than its discrete tokens alone: "
                   f"{'holds' if h['psnr_continuous'] > h['psnr_discrete'] else 'does NOT hold'} "
                   f"({h['psnr_continuous']:.2f} vs {h['psnr_discrete']:.2f} dB).")
    for fast, slow in (("var", "raster"), ("masked", "raster")):
        if fast in g and slow in g:
            tf, ts = (1e3 * g[x]["sec_per_image"][0] for x in (fast, slow))
            why = " (slower despite fewer passes: each pass here handles many tokens, while a KV-cached raster pass " \
                  "handles one)" if tf > ts else ""
            out.append(f"- {fast} needs fewer forward passes than {slow}: {g[fast]['forward_passes']} vs "
                       f"{g[slow]['forward_passes']}, at {cmp(fast, slow)}; wall time per image "
                       f"{tf:.1f} vs {ts:.1f} ms{why}.")
    for h, v in (("hart", "var"), ("hart@time", "var@time")):
        if h in g and v in g:
            out.append(f"- {h} vs {v} (HART better than VAR alone is expected): {cmp(h, v)}; class accuracy "
                       f"{100 * g[h]['class_acc'][0]:.1f}% vs {100 * g[v]['class_acc'][0]:.1f}%.")
    return out


def markdown(res: dict, args) -> str:
    pm = lambda t, f=1.0, d=1: f"{f * t[0]:.{d}f} +- {f * t[1]:.{d}f}"  # noqa: E731
    lines = ["# Generation on mnist5k: tokenizers and generators", "",
             f"Written by `python benchmarks/generation.py{' --quick' if args.quick else ''}` in "
             f"{res['minutes']:.0f} min (CPU, one thread per job). Judge: `{JUDGE}` trained on the 4,000 training "
             f"digits, held-out top-1 {100 * (res['judge_test_acc'] or 0):.1f}%.", "",
             "## Tokenizers (held-out reconstruction)", "",
             "| tokenizer | PSNR discrete (dB) | PSNR discrete + residual (dB) | codebook usage | params |",
             "|---|---|---|---|---|"]
    for kind, r in res["tokenizers"].items():
        cont = f"{r['psnr_continuous']:.2f}" if "psnr_continuous" in r else "-"
        lines.append(f"| {kind} | {r['psnr_discrete']:.2f} | {cont} | {r['usage']:.2f} | {r['params'] / 1e6:.2f}M |")
    lines += ["", f"## Generators ({args.samples} samples each, {len(args.seeds)} sampling seeds, "
              f"CFG scale {args.cfg_scale}, {args.cfg_schedule} over VAR / HART's scales; width {args.dim}, depth {args.depth}, {args.gen_epochs} epochs each)", "",
              "| generator | classifier-FID (lower is better) | generated-class accuracy (%) | forward passes / image "
              "| ms / image | params | epochs | train s | held-out token NLL |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["generators"].items():
        fp = str(r["forward_passes"]) + (f" + {r['head_passes']} head" if r.get("head_passes") else "")
        lines.append(f"| {name} | {pm(r['fid'], 1, 2)} | {pm(r['class_acc'], 100)} | {fp} | "
                     f"{pm(r['sec_per_image'], 1000)} | {r['params'] / 1e6:.2f}M | {r.get('epochs', '-')} | "
                     f"{r['train_seconds'] or 0:.0f} | "
                     f"{r['test_nll'] or float('nan'):.3f} |")
    lines += ["", "FID floors against the same held-out digits: " + ", ".join(
        f"{k} {v:.2f}" for k, v in res["fid_floor"].items()), "",
              "Masked AR's NLL is scored on masked tokens only and VAR/HART's over all scales: NLLs compare "
              "within a row's family, not across.", ""]
    lines += ["## The seed's expectations, checked by the numbers above", ""] + claims(res) + [""]
    for name in res["generators"]:
        lines.append(f"![{name}](generation_{name.replace('@', '_')}.png)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
