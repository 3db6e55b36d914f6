"""benchmarks/demo_recipe.py and benchmarks/deit_converged.py: every row is the demo's config plus the flags
it prints, the last row is configs/demo_mnist.yaml, the DeiT rows differ from the demo ViT only in the
tokens and the task, the verdicts are computed from the numbers, and both --quick runs go end to end."""
import json
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dr(load_benchmark):
    return load_benchmark("demo_recipe")


@pytest.fixture(scope="module")
def dc(load_benchmark):
    return load_benchmark("deit_converged")


def _cli_config(flags: str):
    """The TrainConfig `vitkit train --config configs/demo_mnist.yaml FLAGS` trains."""
    from vitkit.cli import build_parser
    from vitkit.cli.train import train_config
    args = build_parser().parse_args(["train", "--config", str(ROOT / "configs" / "demo_mnist.yaml"),
                                      *shlex.split(flags)])
    return train_config(args)


def _fields(d: dict) -> dict:
    """The config's fields that make the result: run-only fields left out, and a model_args entry at the ViT's
    own default left out too (a row without patch_drop is the row's flags with patch_drop=0)."""
    import dataclasses

    from vitkit.models.vit import ViTConfig
    defaults = {f.name: f.default for f in dataclasses.fields(ViTConfig)}
    out = {k: v for k, v in d.items() if k not in ("out", "num_threads", "num_workers", "log_every", "resume")}
    if "model_args" in out:
        out["model_args"] = {k: v for k, v in out["model_args"].items() if k not in defaults or v != defaults[k]}
    return out


def test_rows_run_from_the_previous_recipe_to_the_config(dr, load_benchmark):
    from vitkit.train import TrainConfig
    rows = dr.row_configs()
    assert list(rows) == [key for key, _, _ in dr.STEPS]
    prev = rows["previous"]  # what its label says, and the config amp_accuracy.md measured
    assert (prev["amp"], prev["epochs"], prev["batch_size"], prev["model"]) == ("none", 90, 64, "vit_mnist_patch7_28")
    assert _fields(prev) == _fields(TrainConfig.from_file(load_benchmark("amp_accuracy").CONFIG).to_dict())
    assert _fields(list(rows.values())[-1]) == _fields(dr.final_config())  # the last row is the shipped config
    assert _fields(rows[dr.V2]) == _fields(dr.v2_config())  # and row V2 the recipe before PatchDropout
    # each row changes something, and its printed flags give its config through the real CLI
    final = dr.final_config()
    configs = list(rows.values())
    for a, b in zip(configs, configs[1:]):
        assert a != b
    for key, cfg in {**rows, **dr.detour_configs()}.items():  # detours too (one adds a model_args key)
        assert _fields(_cli_config(dr.flags(cfg, final)).to_dict()) == _fields(cfg), key
    jobs = dr.jobs(Path("w"))
    last = dr.STEPS[-1][0]
    for key in (dr.V2, last):  # both trained with seeds 1 and 2
        assert {n for n in jobs if n.startswith(f"{key}/s")} == {f"{key}/s1", f"{key}/s2"}
        assert {jobs[f"{key}/s{s}"]["seed"] for s in (1, 2)} == {1, 2}
        assert _fields(dict(jobs[f"{key}/s1"], seed=0)) == _fields(rows[key])
    assert dr.seed_runs(Path("w")) == {0: Path("w") / last, 1: Path("w") / f"{last}_s1", 2: Path("w") / f"{last}_s2"}


def test_demo_config_is_a_plain_vit(dr):
    """The demo keeps patch tokens only: no class token, no convolution beyond the patch embedding."""
    import torch

    from vitkit import data as vdata
    from vitkit.train import TrainConfig
    from vitkit.train.tasks import DataInfo, build_backbone
    cfg = TrainConfig.from_dict(dr.final_config())
    model = build_backbone(cfg, DataInfo.from_bundle(vdata.build("mnist5k")))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == convs[0].stride  # the patch embedding, kernel = stride
    assert model.num_prefix_tokens == 0 and cfg.amp in ("auto", "bf16")


def test_deit_rows_are_the_demo_vit_with_tokens_and_a_teacher(dc, dr, tmp_path):
    jobs = dc.configs(tmp_path / "w", tmp_path / "demo")
    final = dr.v2_config()  # the DeiT table measured the recipe before PatchDropout
    for seed in (0, 1, 2):
        vit = jobs[f"demo/vit/s{seed}"]
        assert _fields(vit) == _fields(dict(final, seed=seed))
        assert vit["out"] == str(dr.seed_runs(tmp_path / "demo", dr.V2)[seed])  # demo_recipe.py's seed runs of v2
        teacher = jobs[f"teacher/s{seed}"]
        assert teacher["model"] == "resnet_small_28" and teacher["epochs"] == dc.TEACHER_EPOCHS
        for setting in dc.SETTINGS:
            v = jobs[f"{setting}/vit/s{seed}"]
            for row in ("deit_none", "deit_hard", "deit_soft"):
                d = jobs[f"{setting}/{row}/s{seed}"]
                assert d["model_args"] == {**v["model_args"], **dc.DEIT_ARGS}
                same = lambda c: {k: x for k, x in _fields(c).items() if k not in ("model_args", "task", "task_args")}  # noqa: E731
                assert same(d) == same(v)
            assert jobs[f"{setting}/deit_hard/s{seed}"]["task_args"] == {"kind": "hard", "teacher": teacher["out"]}
            assert jobs[f"{setting}/deit_soft/s{seed}"]["task_args"] == {**dc.SOFT, "teacher": teacher["out"]}
            assert "task" not in jobs[f"{setting}/deit_none/s{seed}"] or \
                jobs[f"{setting}/deit_none/s{seed}"]["task"] == "classify"
    strong = jobs["deit/vit/s0"]
    assert strong["mixup"] == 0.8 and strong["cutmix"] == 1.0
    assert strong["augment"]["auto_augment"] == "rand-m9-mstd0.5-inc1" and strong["augment"]["erase"] == 0.25
    assert strong["augment"].get("hflip", 0) == 0  # no flips on digits


def _rows(**means):
    return {k: {"mean": m, "std": 0.001} for k, m in means.items()}


def test_verdicts_are_computed_from_the_numbers(dc):
    v = dc.verdicts(_rows(cnn=0.99, vit=0.98, deit_none=0.979, deit_hard=0.988, deit_soft=0.981))
    assert v["gap"] == pytest.approx(0.01)
    assert v["rows"]["deit_hard"]["gap_closed"] == pytest.approx(0.8)
    assert v["wins"] == ["deit_hard"] and "closes 80%" in v["text"] and "distillation wins" in v["text"]
    v = dc.verdicts(_rows(cnn=0.99, vit=0.98, deit_none=0.9805, deit_hard=0.9806, deit_soft=0.979))
    assert v["wins"] == [] and "does not win" in v["text"]
    assert v["rows"]["deit_hard"]["clear_over_vit"] is False  # 0.06 pts, within the 0.14-pt spread
    v = dc.verdicts(_rows(cnn=0.97, vit=0.98, deit_none=0.98, deit_hard=0.98, deit_soft=0.98))
    assert v["rows"]["deit_hard"]["gap_closed"] is None and "no gap to close" in v["text"]
    # without the no-teacher control: judged against the ViT alone, and the text says what that leaves open
    v = dc.verdicts(_rows(cnn=0.99, vit=0.98, deit_hard=0.988, deit_soft=0.981))
    assert v["wins"] == ["deit_hard"] and "over_none" not in v["rows"]["deit_hard"]
    assert "without the no-teacher control" in v["text"]


def test_quick_runs(dr, dc, tmp_path):
    res = dr.main(["--quick", "--work", str(tmp_path / "dr"), "--out", str(tmp_path / "out"), "--cost"])
    assert len(res["rows"]) == len(dr.STEPS) and len(res["final"]["accs"]) == 3
    assert res["cost"]["ratio"] > 0 and set(res["cost"]["vs_v2"]) == {"previous", "v2", "recipe", *dr.COST_DETOURS}
    md = (tmp_path / "out" / "demo_recipe_quick.md").read_text()
    assert "| run | flags |" in md and "## Cost" in md
    assert json.loads((tmp_path / "out" / "demo_recipe_quick.json").read_text())["quick"] is True
    res = dc.main(["--quick", "--control", "--work", str(tmp_path / "dc"), "--out", str(tmp_path / "out")])
    for s in res["settings"].values():
        a = s["agreement"]
        assert 0 <= a["clean"][0] <= 1 and 0 <= a["augmented"][0] <= 1
        assert set(s["rows"]) == {k for k, _ in dc.ROWS} and "text" in s["verdict"]
    assert res["settings"]["demo"]["agreement"]["mixed"] is not None  # the demo mixes (mixup) too
    md = (tmp_path / "out" / "deit_converged_quick.md").read_text()
    assert md.count("**Verdict") == 2 and "deit_converged.py --control --quick" in md
    # one setting, no control: the finished runs are reused and the report covers that setting only
    res = dc.main(["--quick", "--settings", "demo", "--work", str(tmp_path / "dc"), "--out", str(tmp_path / "out")])
    assert list(res["settings"]) == ["demo"] and "deit_none" not in res["settings"]["demo"]["rows"]


def test_shipped_deit_configs_are_the_measured_rows(dc, tmp_path):
    """configs/demo_teacher.yaml and configs/demo_deit.yaml train what deit_converged.md measured (seed 0):
    the teacher row and DeiT's-augmentation hard-distillation row, the teacher read from runs/demo_teacher."""
    from vitkit.train import TrainConfig
    jobs = dc.configs(tmp_path / "w", tmp_path / "demo")
    teacher = TrainConfig.from_file(ROOT / "configs" / "demo_teacher.yaml").to_dict()
    assert _fields(teacher) == _fields(jobs["teacher/s0"])
    deit = TrainConfig.from_file(ROOT / "configs" / "demo_deit.yaml").to_dict()
    assert deit["task_args"].pop("teacher") == "runs/demo_teacher"
    row = jobs["deit/deit_hard/s0"]
    assert row["task_args"].pop("teacher") == str(tmp_path / "w" / "teacher" / "s0")
    assert _fields(deit) == _fields(row)
