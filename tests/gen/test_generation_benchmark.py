"""benchmarks/generation.py without training: the options each row samples and trains with, the order of
its jobs, and (issue 23) training seeds, the "before" rows from the committed results, and the verdicts
computed from the numbers. The --quick end-to-end run is
tests/test_benchmark_training.py::test_generation_benchmark_quick."""
import argparse
import json
from pathlib import Path

import pytest

COMMITTED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "generation.json"


@pytest.fixture
def gen(load_benchmark):
    return load_benchmark("generation")


def test_var_and_hart_rows_sample_with_the_official_linear_ramp_by_default(gen):
    args = gen.build_parser().parse_args([])
    assert args.cfg_schedule == "linear"
    opts = {n: gen.sampling_options(args, n) for n in ("raster", "random", "masked", "var", "hart", "var@time")}
    assert opts == {"raster": {}, "random": {}, "masked": {"steps": 8}, "var": {"cfg_schedule": "linear"},
                    "hart": {"cfg_schedule": "linear"}, "var@time": {"cfg_schedule": "linear"}}
    old = argparse.Namespace(masked_steps=8, cfg_schedule="constant")
    assert gen.sampling_options(old, "hart") == {"cfg_schedule": "constant"}


def test_the_hybrid_tokenizer_starts_from_the_multiscale_run_by_default(tmp_path, gen):
    _, tokenizers, gens = gen.configs(gen.build_parser().parse_args([]), tmp_path)
    for s in (0, 1, 2):
        assert tokenizers[f"hybrid_s{s}"]["init"] == tokenizers[f"multiscale_s{s}"]["out"]
        assert tokenizers[f"hybrid_s{s}"]["task_args"] == {**tokenizers[f"multiscale_s{s}"]["task_args"],
                                                             "kind": "hybrid"}
        assert gens[f"hart_s{s}"]["task_args"]["tokenizer"] == tokenizers[f"hybrid_s{s}"]["out"]
    _, joint, _ = gen.configs(gen.build_parser().parse_args(["--hybrid", "joint"]), tmp_path)
    assert not any("init" in c for c in joint.values())


def test_harts_residual_target_is_a_flag_and_both_give_two_rows(tmp_path, gen):
    parse = gen.build_parser().parse_args
    _, _, gens = gen.configs(parse([]), tmp_path)
    assert gens["hart_s0"]["task_args"]["residual_target"] == "gt" and "hart_sampled_s0" not in gens
    _, _, gens = gen.configs(parse(["--residual-target", "both", "--train-seeds", "3"]), tmp_path)
    assert gens["hart_s3"]["task_args"]["residual_target"] == "gt"
    assert gens["hart_sampled_s3"]["task_args"]["residual_target"] == "sampled"
    assert gen.sampling_options(parse([]), "hart_sampled") == {"cfg_schedule": "linear"}


def test_raster_var_and_hart_train_with_every_training_seed_and_their_own_tokenizers(tmp_path, gen):
    _, tokenizers, gens = gen.configs(gen.build_parser().parse_args([]), tmp_path)
    assert sorted(gens) == sorted([f"{n}_s{s}" for n in ("raster", "var", "hart") for s in (0, 1, 2)]
                                  + ["random_s0", "masked_s0"])
    assert sorted(tokenizers) == sorted(f"{k}_s{s}" for k in ("vq", "multiscale", "hybrid") for s in (0, 1, 2))
    for name, cfg in {**tokenizers, **gens}.items():
        row, seed = gen.row_of(name)
        assert cfg["seed"] == seed and cfg["out"] == str(tmp_path / ("gen" if name in gens else "tokenizer") / name)
        if name in gens:
            assert gen.row_of(Path(cfg["task_args"]["tokenizer"]).name)[1] == seed  # the tokenizer of its seed
    assert gen.row_of("hart_sampled_s2") == ("hart_sampled", 2) and gen.row_of("var@time_s0") == ("var@time", 0)


def test_every_job_runs_after_the_runs_it_starts_from(tmp_path, gen):
    judge, tokenizers, gens = gen.configs(gen.build_parser().parse_args(["--residual-target", "both"]), tmp_path)
    every = {**judge, **tokenizers, **gens}
    phases = gen.phases(tokenizers, gens)
    assert sorted(j for p in phases for j in p) == sorted(every)
    done: set[str] = set()
    for phase in phases:
        for j in phase:
            needs = [every[j].get("init"), every[j].get("task_args", {}).get("tokenizer")]
            assert all(n is None or n in {every[d]["out"] for d in done} for n in needs), j
        done |= set(phase)


def test_rows_aggregate_over_training_seeds_or_else_sampling_seeds(gen):
    seed = lambda fids, accs, nll: {"fid": fids, "class_acc": accs, "secs": [0.01, 0.02], "test_nll": nll,  # noqa: E731
                                    "train_seconds": 10.0, "test_token_acc": 0.3, "forward_passes": 6,
                                    "head_passes": None, "params": 5, "epochs": 20}
    one = gen.aggregate_generator({0: seed([1.0, 2.0, 3.0], [0.9, 0.9, 0.9], 2.0)})
    assert one["fid"] == (2.0, 1.0) and one["fid_std_over"] == "sampling seeds"      # as before issue 23
    three = gen.aggregate_generator({0: seed([1.0, 3.0], [0.8, 0.8], 2.0), 1: seed([4.0, 4.0], [0.9, 0.9], 2.2),
                                     2: seed([7.0, 5.0], [1.0, 1.0], 2.4)})
    assert three["fid"] == pytest.approx((4.0, 2.0)) and three["fid_std_over"] == "training seeds"
    assert three["fid_sampling_std"] == pytest.approx((2 ** 0.5 + 0 + 2 ** 0.5) / 3)
    assert three["class_acc"] == pytest.approx((0.9, 0.1)) and three["test_nll"] == pytest.approx(2.2)
    assert three["per_seed"]["1"]["fid"] == (4.0, 0.0) and three["train_seeds"] == [0, 1, 2]


def test_the_committed_rows_are_the_before_and_their_verdicts_are_generation_mds(tmp_path, gen):
    before = gen.load_before(COMMITTED)
    assert before["recipe"] == gen.PRE_ISSUE_23 and before["generators"]["var"]["forward_passes"] == 6
    v = gen.verdicts(before)                          # the claims generation.md printed, from its numbers
    assert v["var vs raster"]["verdict"] == "worse" and v["masked vs raster"]["verdict"] == "worse"
    assert v["hart vs var"]["verdict"] == "similar" and v["hart@time vs var@time"]["verdict"] == "worse"
    assert v["hybrid residual > discrete"]["holds"]
    carried = tmp_path / "generation.json"               # a re-run's file carries the first "before"
    carried.write_text(json.dumps({"generators": {}, "before": before}))
    assert gen.load_before(carried) == before
    assert gen.load_before(tmp_path / "missing.json") is None


def test_the_report_shows_before_and_after_with_what_changed_and_both_verdicts(gen):
    before = gen.load_before(COMMITTED)
    args = gen.build_parser().parse_args([])
    new = json.loads(json.dumps(before))                # new numbers: HART now clearly beats VAR
    for name, r in new["generators"].items():
        r.update(fid_std_over="training seeds" if name in gen.SEEDED else "sampling seeds", train_seeds=[0, 1, 2],
                 fid_sampling_std=0.1)
    new["generators"]["hart"]["fid"] = [1.0, 0.05]
    for r in new["tokenizers"].values():
        r.update(psnr_discrete_std=0.1, psnr_continuous_std=0.1, trainable=r["params"])
    res = {**new, "minutes": 90.0, "judge_test_acc": 0.88, "before": before,
           "recipe": {**gen.recipe(vars(args)), "head_condition": "word_embed"}}
    md = gen.markdown(res, args)
    assert "## Before and after issue 23" in md
    what = gen.changes(res["recipe"], before["recipe"])
    assert "guidance ramped linearly" in what["var"] and "3 training seeds (before: 1)" in what["raster"]
    assert "decoder trained alone" in what["hart"] and "word_embed" in what["hart"]
    assert what["random"] == "same recipe" and "decoder trained alone" in what["tokenizer:hybrid"]
    assert "| hart vs var | similar FID (1.62 vs 1.40) | better FID (1.00 vs 1.40) |" in md
    assert "- hart vs var (HART better than VAR alone is expected): better FID (1.00 vs 1.40)" in md


def test_what_changed_names_each_rows_own_residual_target(gen):
    old = gen.PRE_ISSUE_23
    both = gen.changes({**gen.recipe({"residual_target": "both"}), "head_condition": "word_embed"}, old)
    assert "sampled" not in both["hart"] and "sampled tokens" in both["hart_sampled"]
    sampled = gen.changes({**gen.recipe({"residual_target": "sampled"}), "head_condition": "word_embed"}, old)
    assert "sampled tokens (HART's) (before: head trained on the ground-truth tokens)" in sampled["hart"]
