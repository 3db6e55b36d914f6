"""benchmarks/self_supervised.py follows the papers' code: sin-cos tables, MAE's betas, MoCo v3's frozen patch
projection, layer-wise lr decay when fine-tuning a pretrained backbone, MAE's LARS probe; SimCLR is a column
beside MoCo v3; the previous recipe's numbers are carried into the report."""
import json
from types import SimpleNamespace

import pytest

from vitkit.train import TrainConfig


@pytest.fixture(scope="module")
def ssl(load_benchmark):
    return load_benchmark("self_supervised")


def _args(**kw):
    base = dict(mask_ratios=[0.75, 0.5], contrastive=["mocov3", "simclr"], pretrain_epochs=60, contrastive_epochs=30,
                finetune_steps=600, probe_blr=0.1, seeds=[0, 1, 2], labels=[10, 100], quick=False)
    return SimpleNamespace(**{**base, **kw})


def test_pretraining_runs_use_the_reference_recipes(ssl):
    cfgs = ssl.pretrain_configs(_args())
    assert set(cfgs) == {"mae_0.75", "mae_0.5", "mocov3", "simclr"}
    for name, c in cfgs.items():
        cfg = TrainConfig.from_dict(c)
        assert cfg.model_args == {"pos_embed": "sincos"}, name           # fixed 2D sin-cos table (MAE, MoCo v3)
        assert cfg.betas == ((0.9, 0.95) if name.startswith("mae") else (0.9, 0.999)), name
    assert cfgs["mocov3"]["task_args"]["stop_grad_conv1"] is True
    assert cfgs["simclr"]["task"] == "simclr" and cfgs["simclr"]["epochs"] == 30


def test_fine_tuning_decays_the_lr_layer_wise_and_the_probe_is_maes_lars(ssl, tmp_path):
    args = _args()
    ft = ssl.finetune_config(args, "mae", 10, 1, "runs/mae", probe=False)
    scratch = ssl.finetune_config(args, "scratch", 10, 1, None, probe=False, pretrained=False)
    probe = ssl.finetune_config(args, "mae", 100, 1, "runs/mae", probe=True)
    assert ft["layer_decay"] == 0.75 and "layer_decay" not in scratch
    assert {k: v for k, v in ft.items() if k not in ("layer_decay", "init")} == scratch
    assert probe["optimizer"] == "lars" and probe["lr"] == pytest.approx(0.1 * 64 / 256)
    assert (probe["weight_decay"], probe["clip_grad"], probe["min_lr"], probe["probe"]) == (0.0, None, 0.0, True)
    for c in (ft, scratch, probe):
        assert TrainConfig.from_dict(c).model_args["pos_embed"] == "sincos"
    # MAE's own fine-tuning head (main_finetune.py): fc_norm(mean(x)) and the sin-cos table trained
    mae_head = ssl.finetune_config(args, "mae_fcnorm", 10, 1, "runs/mae", probe=False, mae_head=True)
    assert mae_head["model_args"] == {**ft["model_args"], "fc_norm": True, "pos_embed": "sincos_learn"}
    assert {k: v for k, v in mae_head.items() if k != "model_args"} == {k: v for k, v in ft.items() if k != "model_args"}
    # a probe needs --init: the scratch probe reads a seeded random-init backbone file
    path = ssl.random_init(tmp_path, 3)
    assert path.endswith("s3.safetensors") and ssl.random_init(tmp_path, 3) == path


def test_previous_numbers_are_those_of_the_previous_recipe(ssl, tmp_path):
    committed = ssl.RESULTS / "ssl.json"
    old = json.loads(committed.read_text())
    if old.get("recipe") is None:  # the report before the reference recipes: its numbers are the previous ones
        prev = ssl.previous_results(committed)
        assert prev["finetune"] == old["finetune"] and prev["source"] == str(committed)
    new = {"recipe": ssl.RECIPE, "previous": {"finetune": {"mae|ft|10": {"mean": 0.9, "std": 0.01}}}, "quick": False}
    (tmp_path / "ssl.json").write_text(json.dumps(new))
    assert ssl.previous_results(tmp_path / "ssl.json") == new["previous"]   # a re-run passes them on
    (tmp_path / "q.json").write_text(json.dumps({"quick": True, "finetune": {}}))
    assert ssl.previous_results(tmp_path / "q.json") is None and ssl.previous_results(tmp_path / "none.json") is None


def test_report_puts_the_old_numbers_beside_the_new_and_simclr_beside_mocov3(ssl):
    args = _args(labels=[10], mask_ratios=[0.75], seeds=[0, 1])
    table = {(m, k, 10): [0.5, 0.6] for m in ("scratch", "mae", "mocov3", "simclr") for k in ("ft", "probe")}
    previous = {"source": "ssl.json", "finetune": {f"{m}|{k}|10": {"mean": 0.7, "std": 0.02}
                                                    for m in ("scratch", "mae", "mocov3") for k in ("ft", "probe")}}
    results = {"previous": previous, "minutes": 1.0, "train_minutes": 2.0, "clip": {}}
    text = ssl.markdown(results, args, "mae_0.75", [], table)
    assert ("| labels / class | scratch | scratch *(old)* | mae | mae *(old)* | mocov3 | mocov3 *(old)* | simclr |"
            in text)
    new, was = "55.0 +- 7.1", "70.0 +- 2.0"
    assert f"| 10 | {new} | {was} | {new} | {was} | {new} | {was} | {new} |" in text
    assert "| 0.75 | 55.0 +- 7.1 *(old 70.0)* | 55.0 +- 7.1 *(old 70.0)* |" in text
    assert "- ft, 10 labels/class, simclr: +0.0" in text and "LARS, lr 0.1 x batch / 256" in text
    assert "*(old)*" not in ssl.markdown({**results, "previous": None}, args, "mae_0.75", [], table)
