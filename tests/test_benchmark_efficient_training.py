"""benchmarks/efficient_training.py: every family trains with the one recipe (its own epochs and lr),
SparseViT adapts from the Swin run itself, and --quick runs end to end and writes the report."""
import json
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(scope="module")
def et(load_benchmark):
    return load_benchmark("efficient_training")


def test_configs_share_the_recipe_and_sparsevit_adapts_from_the_swin_run(et, tmp_path):
    from vitkit import data as vdata
    from vitkit.bench.ablations import RECIPE
    from vitkit.train import TrainConfig
    from vitkit.train.tasks import DataInfo, build_backbone
    cfgs = et.configs(SimpleNamespace(quick=False, seed=0), tmp_path)
    assert list(cfgs) == [f.key for f in et.FAMILIES] + ["sparsevit"]
    own = ("model", "epochs", "eval_every", "lr", "augment", "out", "task", "init", "warmup_epochs")
    shared = {k: v for k, v in cfgs["swin"].items() if k not in own}
    assert shared == {k: v for k, v in RECIPE.items() if k not in own} | dict(
        data="mnist5k", seed=0, num_threads=1, log_every=1_000_000, labels_per_class=None)
    for f in et.FAMILIES:
        c = cfgs[f.key]
        assert {k: v for k, v in c.items() if k not in own} == shared, f.key
        assert (c["epochs"], c["lr"], c["model"]) == (f.epochs, f.lr, f.model)
        assert c["augment"] == (RECIPE["augment"] if f.augment is None else f.augment)
    assert cfgs["pvt"]["augment"] == {}  # the one family trained without augmentation (FAMILIES says why)
    sv = cfgs["sparsevit"]
    assert (sv["task"], sv["init"], sv["epochs"], sv["warmup_epochs"]) == (
        "sparsevit_adapt", cfgs["swin"]["out"], et.ADAPT["epochs"], 0.0)
    info = DataInfo.from_bundle(vdata.build("mnist5k"))
    x = torch.zeros(2, 1, 28, 28)
    for key, c in cfgs.items():
        model = build_backbone(TrainConfig.from_dict(c), info).eval()
        with torch.no_grad():
            assert model(x).shape == (2, 10), key


@pytest.mark.slow
def test_quick_run_writes_md_and_json(et, tmp_path):
    et.main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "efficient_training_quick.json").read_text())
    assert list(saved["families"]) == [f.key for f in et.FAMILIES] + ["sparsevit"]
    md = (tmp_path / "efficient_training_quick.md").read_text()
    for key, r in saved["families"].items():
        assert 0.0 <= r["top1"] <= 1.0 and r["params"] > 0 and r["train_seconds"] > 0, key
        row = next(line for line in md.splitlines() if line.startswith(f"| {r['label']} |"))
        assert f"| {100 * r['top1']:.1f} | {'yes' if r['top1'] > et.TARGET else '**no**'} |" in row, key
    sp = saved["sparsevit"]
    assert sp["windows_per_stage"] == [16, 4, 1]
    assert [r["sparsity"] for r in sp["rows"]] == [0.0, 0.3, 0.5, 0.7]
    assert [r["windows_kept"] for r in sp["rows"]] == [[16, 4, 1], [12, 3, 1], [8, 2, 1], [5, 2, 1]]
    # sparsity 0 with the Swin run's weights is the dense Swin run
    assert sp["rows"][0]["before_adaptation"] == sp["dense_swin"]
    assert sp["rows"][0]["adapted"] == saved["families"]["sparsevit"]["top1_eval_sparsity_0"]
    assert sp["diff_vs_dense"] == pytest.approx(sp["rows"][2]["adapted"] - sp["dense_swin"])
    assert sp["target_met"] == (sp["diff_vs_dense"] >= -et.TOLERANCE - 1e-9)
    adapt = json.loads((tmp_path / "runs" / "sparsevit" / "config.json").read_text())
    assert adapt["task"] == "sparsevit_adapt" and adapt["init"] == str(tmp_path / "runs" / "swin")
    text = (tmp_path / "efficient_training_quick.md").read_text()
    assert "`python benchmarks/efficient_training.py --quick`" in text and "do not edit by hand" in text
    assert text.count("| `") == 6 and "| Stand-alone local attention (3x3) | `local_vit_nano_28` |" in text
    assert ("is met" if sp["target_met"] else "is **not met**") in text
    # the header says how many runs the invocation found finished: none the first time, all when run again
    assert saved["reused_runs"] == 0 and "reusing" not in md
    et.main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path)])
    again = json.loads((tmp_path / "efficient_training_quick.json").read_text())
    assert again["reused_runs"] == again["runs"] == len(saved["families"])
    assert f"reusing all {again['runs']} runs already finished" in (tmp_path / "efficient_training_quick.md").read_text()
