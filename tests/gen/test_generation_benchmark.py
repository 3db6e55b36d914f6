"""benchmarks/generation.py without training: the options each row samples with, and (issue 23) the
"before" table and the verdicts it computes from the numbers. The --quick end-to-end run is
tests/test_benchmark_training.py::test_generation_benchmark_quick."""
import argparse


def test_var_and_hart_rows_sample_with_the_official_linear_ramp_by_default(load_benchmark):
    gen = load_benchmark("generation")
    args = gen.build_parser().parse_args([])
    assert args.cfg_schedule == "linear"
    opts = {n: gen.sampling_options(args, n) for n in ("raster", "random", "masked", "var", "hart", "var@time")}
    assert opts == {"raster": {}, "random": {}, "masked": {"steps": 8}, "var": {"cfg_schedule": "linear"},
                    "hart": {"cfg_schedule": "linear"}, "var@time": {"cfg_schedule": "linear"}}
    old = argparse.Namespace(masked_steps=8, cfg_schedule="constant")
    assert gen.sampling_options(old, "hart") == {"cfg_schedule": "constant"}


def test_the_hybrid_tokenizer_starts_from_the_multiscale_run_by_default(tmp_path, load_benchmark):
    gen = load_benchmark("generation")
    _, tokenizers, gens = gen.configs(gen.build_parser().parse_args([]), tmp_path)
    assert tokenizers["hybrid"]["init"] == tokenizers["multiscale"]["out"]
    assert tokenizers["hybrid"]["task_args"] == {**tokenizers["multiscale"]["task_args"], "kind": "hybrid"}
    assert gens["hart"]["task_args"]["tokenizer"] == tokenizers["hybrid"]["out"]
    _, joint, _ = gen.configs(gen.build_parser().parse_args(["--hybrid", "joint"]), tmp_path)
    assert "init" not in joint["hybrid"]


def test_harts_residual_target_is_a_flag_and_both_give_two_rows(tmp_path, load_benchmark):
    gen = load_benchmark("generation")
    parse = gen.build_parser().parse_args
    _, _, gens = gen.configs(parse([]), tmp_path)
    assert gens["hart"]["task_args"]["residual_target"] == "gt" and "hart_sampled" not in gens
    _, _, gens = gen.configs(parse(["--residual-target", "both"]), tmp_path)
    assert gens["hart"]["task_args"]["residual_target"] == "gt"
    assert gens["hart_sampled"]["task_args"]["residual_target"] == "sampled"
    assert gen.sampling_options(parse([]), "hart_sampled") == {"cfg_schedule": "linear"}
