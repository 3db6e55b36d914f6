"""vitkit.bench.ablations: the grid is the paper's ablations (one change a row), runs are shared and
equal in recipe, the verdicts follow from the numbers, and the --quick sweep writes its report."""
import argparse
import dataclasses
import json

import pytest

from vitkit.bench import ablations as A
from vitkit.models import create_model


def _args(*argv: str) -> argparse.Namespace:
    args = A.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))
    args.epochs = args.epochs or A.EPOCHS[args.data]
    return args


def _changed_fields(base: str, model_args: dict) -> set[str]:
    """Config fields of the built variant that differ from the base model's (``name`` aside)."""
    a, b = create_model(base, device="meta").cfg, create_model(base, device="meta", **model_args).cfg
    return {f.name for f in dataclasses.fields(a) if f.name != "name" and getattr(a, f.name) != getattr(b, f.name)}


def test_grid_is_the_papers_ablations_one_change_per_row():
    rows = {(v.group, v.label): v for v in A.grid("mnist5k")}
    expected = {
        ("position embedding", "none"): {"pos_embed": "none"},
        ("position embedding", "learned 1D"): {},
        ("position embedding", "learned 2D"): {"pos_embed": "learn2d"},
        ("position embedding", "relative"): {"pos_embed": "rel"},
        ("where (learned 1D)", "at the input"): {},
        ("where (learned 1D)", "every block"): {"pos_embed_where": "every"},
        ("where (learned 1D)", "every block, shared"): {"pos_embed_where": "every_shared"},
        ("pooling", "class token, lr 0.001"): {},
        ("pooling", "global average pool, lr 0.001"): {"class_token": False, "global_pool": "avg"},
        ("patch size", "P=4"): {},
        ("patch size", "P=7"): {"patch_size": 7},
        ("depth", "2 blocks"): {"depth": 2},
        ("depth", "4 blocks"): {},
        ("depth", "6 blocks"): {"depth": 6},
    }
    assert {k: v.model_args for k, v in rows.items()} == expected
    base = A.BASE["mnist5k"]
    for v in rows.values():
        assert v.lr == A.RECIPE["lr"]  # class token and GAP at the same (matched) lr
        # the built model differs from the base in exactly the fields the row names
        assert _changed_fields(base, v.model_args) == set(v.model_args), v
    # the base model really is the paper's default: class token, learned 1D added at the input, P=4, 4 blocks
    cfg = create_model(base, device="meta").cfg
    assert (cfg.class_token, cfg.global_pool, cfg.pos_embed, cfg.where, cfg.patch_size, cfg.depth) == \
        (True, "token", "learn", "input", 4, 4)


def test_digits_grid_and_extra_pooling_lrs():
    variants = A.grid("digits", pool_lrs=[1e-3, 3e-4])
    patch = [v.model_args for v in variants if v.group == "patch size"]
    assert patch == [{}, {"patch_size": 4}]  # base vit_nano_patch2_8: P=2 vs P=4 on 8x8
    pool = [(v.label, v.lr, v.key) for v in variants if v.group == "pooling"]
    assert [p[1] for p in pool] == [1e-3, 1e-3, 3e-4, 3e-4]
    assert pool[2][2] == "lr=0.0003" and pool[3][2] == "class_token=False,global_pool=avg,lr=0.0003"
    for v in variants:  # every variant builds at 8x8
        create_model(A.BASE["digits"], device="meta", **v.model_args)


def test_canonical_drops_what_the_base_already_has():
    assert A.canonical("vit_nano_patch4_28", {"depth": 4, "patch_size": 4, "pos_embed": "learn"}) == {}
    assert A.canonical("vit_nano_patch4_28", {"pos_embed_where": "input"}) == {}  # None means input for learned
    assert A.canonical("vit_nano_patch4_28", {"depth": 6, "pos_embed": "learn"}) == {"depth": 6}


def test_configs_share_runs_recipe_and_seeds(tmp_path):
    args = _args("--work", str(tmp_path))
    variants = A.grid("mnist5k")
    jobs = A.configs(args, variants, n_full=4000)
    keys = {v.key for v in variants}
    assert len(keys) == 10  # 14 rows, the base shared by all five groups
    assert set(jobs) == {f"{k}/s{s}" for k in keys for s in (0, 1, 2)}
    assert len({j["out"] for j in jobs.values()}) == len(jobs)
    for j in jobs.values():  # same budget and recipe everywhere; only model_args (and lr) vary
        assert {k: j[k] for k in A.RECIPE} == A.RECIPE
        assert (j["model"], j["data"], j["epochs"], j["eval_every"]) == ("vit_nano_patch4_28", "mnist5k",
                                                                           A.EPOCHS["mnist5k"], A.EPOCHS["mnist5k"])
    assert jobs["base/s1"]["model_args"] == {} and jobs["depth=2/s2"]["model_args"] == {"depth": 2}


def test_matched_schedule_keeps_the_optimizer_steps():
    assert A.matched_schedule(15, 64, 4000, None) == (15, 64)
    # 10 per class: 100 images, batch 50 (2 steps an epoch); the full run takes 15 * 62 = 930 steps
    assert A.matched_schedule(15, 64, 4000, 10) == (465, 50)
    epochs, batch = A.matched_schedule(20, 64, 4000, 100)  # 1,000 images, batch 64: 15 steps an epoch
    assert (epochs, batch) == (83, 64) and epochs * 15 >= 20 * 62 > (epochs - 1) * 15


def test_summarize_computes_the_verdicts():
    row = lambda label, m, s: {"label": label, "mean": m, "std": s}  # noqa: E731
    pos = [row("none", 0.80, 0.01), row("learned 1D", 0.90, 0.01), row("learned 2D", 0.905, 0.01),
           row("relative", 0.895, 0.01)]
    s = A.summarize({"position embedding": pos, "depth": [row("2", 0.88, 0.0), row("4", 0.881, 0.01)]})
    p = s["position embedding"]
    assert p["best"] == "learned 2D" and p["none_clearly_worse"] and p["kinds_tie"]
    assert p["none_deficit"] == pytest.approx(0.105)
    assert s["depth"]["best"] == "4" and not s["depth"]["separated"]  # 0.1 pt < spread 1 pt
    # "none" within the spread of one kind: not clearly worse; kinds 5 pts apart: no tie
    pos[0] = row("none", 0.88, 0.02)
    pos[3] = row("relative", 0.85, 0.01)
    p = A.summarize({"position embedding": pos})["position embedding"]
    assert not p["none_clearly_worse"] and not p["kinds_tie"]


def test_parser_is_reusable_by_the_cli():
    p = A.add_arguments(argparse.ArgumentParser(prog="vitkit ablate"))
    a = p.parse_args(["--data", "digits", "--epochs", "3", "--seeds", "0", "1", "--jobs", "1"])
    assert (a.data, a.epochs, a.seeds, a.jobs, a.quick, a.labels_per_class) == ("digits", 3, [0, 1], 1, False, None)
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "cifar"])


@pytest.mark.slow
def test_quick_sweep_writes_its_report(tmp_path, capsys):
    res = A.main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path)])
    said = capsys.readouterr().out  # where the runs and the results went (issue 25: it never said)
    assert str(tmp_path / "runs") in said and str(tmp_path / "ablations_quick") + ".md" in said
    saved = json.loads((tmp_path / "ablations_quick.json").read_text())
    assert list(saved["groups"]) == ["position embedding", "where (learned 1D)", "pooling", "patch size", "depth"]
    assert saved["runs"] == 10 and res["epochs"] == 1
    for rows in saved["groups"].values():
        for r in rows:
            assert 0.0 <= r["mean"] <= 1.0 and len(r["accs"]) == 1 and r["params"] > 0
    base = [r for rows in saved["groups"].values() for r in rows if r["key"] == "base"]
    assert len(base) == 5 and len({r["mean"] for r in base}) == 1  # one run, shown in every group
    text = (tmp_path / "ablations_quick.md").read_text()
    assert "Position embedding: best is" in text and '"none" is' in text
    assert (tmp_path / "ablations_quick.png").is_file()
