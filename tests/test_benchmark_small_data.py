"""benchmarks/small_data.py: one recipe for every row, the DeiT teacher is the CNN run of the same seed
and dataset, the paper's expectations are computed from the numbers, and --quick runs end to end."""
import json
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(scope="module")
def sd(load_benchmark):
    return load_benchmark("small_data")


def test_every_row_shares_the_recipe_and_the_teacher_is_the_same_seeds_cnn(sd, tmp_path):
    from vitkit import data as vdata
    from vitkit.train import TrainConfig
    from vitkit.train.tasks import DataInfo, build_backbone
    args = SimpleNamespace(epochs=None, labels_per_class=None, quick=False)
    for data, n_full in (("mnist5k", 4000), ("digits", 1438)):
        cfgs = sd.configs(args, data, 2, tmp_path, n_full)
        assert list(cfgs) == [r.key for r in sd.ROWS]
        shared = {k: v for k, v in cfgs["cnn"].items() if k not in ("model", "task", "task_args", "out")}
        assert shared["epochs"] == sd.EPOCHS[data] and shared["seed"] == 2
        for key, c in cfgs.items():
            assert {k: v for k, v in c.items() if k not in ("model", "task", "task_args", "out")} == shared, key
        assert cfgs["deit_hard"]["task_args"] == {"kind": "hard", "teacher": cfgs["cnn"]["out"]}
        assert cfgs["deit_soft"]["task_args"] == {"kind": "soft", "tau": 3.0, "alpha": 0.1,
                                                  "teacher": cfgs["cnn"]["out"]}
        assert cfgs["cnn"]["out"].endswith(f"{data}/cnn/s2") and cfgs["vit_dp"]["task"] == "diverse_patch"
        # DiversePatch's 2x2 on the plain ViT: the same model and seed, the CutMix and the losses apart
        assert {cfgs[k]["model"] for k in ("vit", "vit_pcm", "vit_dpl", "vit_dp")} == {cfgs["vit"]["model"]}
        assert cfgs["vit_pcm"]["task_args"] == {"cos_weight": 0.0, "contrastive_weight": 0.0, "mixing_weight": 0.0,
                                                "mix_prob": 1.0}
        assert cfgs["vit_dpl"]["task_args"] == {"mix_prob": 0.0} and cfgs["vit_dp"]["task_args"] == {}
        # every network, the CNN included, builds at the dataset's size and classifies it
        bundle = vdata.build(data)
        info = DataInfo.from_bundle(bundle)
        x = torch.zeros(2, bundle.in_chans, *bundle.img_size)
        for key, c in cfgs.items():
            model = build_backbone(TrainConfig.from_dict(c), info).eval()
            with torch.no_grad():
                assert model(x).shape == (2, 10), (data, key)


def test_few_labels_keep_the_optimizer_steps(sd, tmp_path):
    args = SimpleNamespace(epochs=None, labels_per_class=20, quick=False)
    c = sd.configs(args, "mnist5k", 0, tmp_path, 4000)["vit"]
    # 200 images, batch 64 -> 3 steps an epoch; the full run is 15 epochs x 62 steps = 930 steps
    assert (c["labels_per_class"], c["batch_size"], c["epochs"]) == (20, 64, 310)


def _stats(**means):
    return {k: {"mean": m, "std": 0.005} for k, m in means.items()}


def test_verdicts_are_computed_from_the_numbers(sd):
    v = sd.verdicts(_stats(cnn=0.98, vit=0.90, deit_hard=0.96, deit_soft=0.93, t2t=0.94, convit=0.91,
                           ceit=0.99, vt=0.90, vit_pcm=0.93, vit_dpl=0.91, vit_dp=0.92))
    assert v["cnn"]["holds"] is None and v["vit"]["holds"] is True
    assert v["deit_hard"]["gap_closed"] == pytest.approx(0.75) and v["deit_hard"]["holds"]
    assert v["t2t"]["gap_closed"] == pytest.approx(0.5) and v["t2t"]["holds"]  # half the gap counts
    assert v["convit"]["gap_closed"] == pytest.approx(0.125) and not v["convit"]["holds"]
    assert v["ceit"]["gap_closed"] == pytest.approx(1.125) and v["ceit"]["holds"]
    assert not v["deit_soft"]["holds"] and not v["vt"]["holds"]
    # DiversePatch is judged against the ViT with the same patch CutMix, not the plain ViT it beats
    assert not v["vit_dp"]["holds"]
    assert "-1.0 pts over the ViT + patch CutMix (+2.0 over the ViT)" in v["vit_dp"]["verdict"]
    assert v["vit_pcm"]["holds"] is None and v["vit_pcm"]["verdict"] == "+3.0 pts over the ViT"
    assert v["vit_dpl"]["verdict"] == "+1.0 pts over the ViT"
    assert v["deit_hard"]["verdict"].startswith("holds: closes 75% of the gap")
    # the ViT at or above the CNN: it does not hold, and "closing the gap" cannot be tested
    v = sd.verdicts(_stats(cnn=0.90, vit=0.92, deit_hard=0.95, deit_soft=0.9, t2t=0.9, convit=0.9, ceit=0.9,
                           vt=0.9, vit_pcm=0.92, vit_dpl=0.9, vit_dp=0.95))
    assert v["vit"]["holds"] is False and v["deit_hard"]["holds"] is None
    assert v["deit_hard"]["verdict"].startswith("not testable")
    assert v["vit_dp"]["holds"] and "within the seed spread" not in v["vit_dp"]["verdict"]
    # a 0.5-pt gap under a 0.7-pt seed spread is flagged
    v = sd.verdicts(_stats(cnn=0.905, vit=0.90, deit_hard=0.905, deit_soft=0.9, t2t=0.9, convit=0.9, ceit=0.9,
                           vt=0.9, vit_pcm=0.9, vit_dpl=0.9, vit_dp=0.9))
    assert "within the seed spread" in v["vit"]["verdict"]


@pytest.mark.slow
def test_quick_run_writes_md_json_png(sd, tmp_path):
    res = sd.main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "small_data_quick.json").read_text())
    assert set(saved["datasets"]) == {"mnist5k", "digits"}
    for data, t in saved["datasets"].items():
        assert list(t["rows"]) == [r.key for r in sd.ROWS]
        for key, r in t["rows"].items():
            assert 0.0 <= r["mean"] <= 1.0 and len(r["accs"]) == 1 and r["params"] > 0, (data, key)
            assert r["train_seconds"] > 0
        assert t["rows"]["cnn"]["model"] == "resnet_small_28"
        # phase two really distilled from the phase-one CNN of the same dataset and seed
        deit = json.loads((tmp_path / "runs" / data / "deit_soft" / "s0" / "config.json").read_text())
        assert deit["task"] == "distill" and deit["task_args"]["teacher"] == str(tmp_path / "runs" / data / "cnn" / "s0")
    assert res["datasets"]["digits"]["rows"]["vit"]["model"] == "vit_nano_patch2_8"
    text = (tmp_path / "small_data_quick.md").read_text()
    assert text.count("| DeiT, soft distillation from the CNN |") == 2 and "paper's expectation" in text
    assert (tmp_path / "small_data_quick.png").is_file()
