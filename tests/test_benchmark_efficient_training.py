"""benchmarks/efficient_training.py: every family trains with the one recipe (its own epochs and lr),
SparseViT adapts from the Swin run itself, rows carried over or re-trained against --before, the
search comparison's verdict follows its numbers, and --quick runs end to end and writes the report."""
import json
import math
import re
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
    # a family whose model code changed trains into a folder of its own: run reuse compares configs only
    assert cfgs["sparsevit"]["out"] == str(tmp_path / "sparsevit-issue23")
    assert cfgs["efficientvit"]["out"] == str(tmp_path / "efficientvit-official-init")
    assert cfgs["swin"]["out"] == str(tmp_path / "swin")
    info = DataInfo.from_bundle(vdata.build("mnist5k"))
    x = torch.zeros(2, 1, 28, 28)
    for key, c in cfgs.items():
        model = build_backbone(TrainConfig.from_dict(c), info).eval()
        with torch.no_grad():
            assert model(x).shape == (2, 10), key


def test_keep_carries_only_unchanged_families_of_the_same_config(et, tmp_path):
    cfgs = et.configs(SimpleNamespace(quick=False, seed=0), tmp_path)
    before = {"source": "x.json", "families": {k: {} for k in cfgs}, "configs": dict(cfgs)}
    et.check_keep(["pvt", "axial", "local"], before, cfgs)
    for keep, message in ((["swin"], "starts from the Swin run"), (["efficientvit"], "code changed"),
                          (["sparsevit"], "not a family"), (["pvt"], "did not train this config")):
        b = dict(before, configs=dict(cfgs, pvt=dict(cfgs["pvt"], lr=1.0)))
        with pytest.raises(ValueError, match=message):
            et.check_keep(keep, b, cfgs)
    with pytest.raises(ValueError, match="needs --before"):
        et.check_keep(["pvt"], None, cfgs)


def test_load_before_keeps_the_first_before(et, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"families": {"swin": {"top1": 0.5}}, "sparsevit": {"rows": []},
                                                 "configs": {}}))
    first = et.load_before(tmp_path / "a.json")
    assert first["families"] == {"swin": {"top1": 0.5}} and first["source"].endswith("a.json")
    (tmp_path / "b.json").write_text(json.dumps({"families": {"swin": {"top1": 0.9}}, "before": first}))
    assert et.load_before(tmp_path / "b.json") == first
    assert et.load_before(None) is None and et.load_before(tmp_path / "missing.json") is None


def test_search_space_is_the_sorted_per_pair_configs(et):
    from vitkit.models.sparsevit import SPARSITY_CHOICES, check_sparsity
    space = et.search_space((1, 1, 1), SPARSITY_CHOICES)
    assert len(space) == len(set(space)) == 9 ** 3
    space = et.search_space((1, 1, 3, 1), SPARSITY_CHOICES)
    assert len(space) == len(set(space)) == 9 * 9 * 165 * 9  # multisets of 3 pairs from 9 choices: C(11, 3)
    for c in space[::997]:
        assert check_sparsity(c, (1, 1, 3, 1)) == c


def test_summary_verdict_follows_the_numbers(et):
    def run(method, seed, score, configs=((0.1,),)):
        return {"method": method, "budget": 10, "seed": seed, "score": score, "other_half": score,
                "evaluated": 10, "best": configs[0], "configs": list(configs)}
    rand = [0.90] * 6 + [0.94] * 4
    runs = ([run("random", s, v) for s, v in enumerate(rand)]
            + [run("evolution", s, 0.94) for s in range(10)]                       # better on 6, 4 ties
            + [run("evolution_p10", s, v, ((0.2,),)) for s, v in enumerate([0.94] * 4 + [0.90] * 6)])
    rows = {r["method"]: r for r in et.summarize_search(runs, window_best=0.94)}
    assert rows["random"]["found_window_best"] == 4 and "verdict" not in rows["random"]
    evo = rows["evolution"]
    assert (evo["wins"], evo["ties"], evo["losses"], evo["verdict"]) == (6, 4, 0, "better")
    assert evo["sign_p"] == pytest.approx(2 / 2 ** 6) and evo["diff_mean"] == pytest.approx(0.024)
    assert evo["same_configs_as_random"] == 10 and evo["found_window_best"] == 10 and evo["mean"] == 0.94
    assert evo["found"] == ["10%"] * 10 and evo["evaluated"] == [10] * 10 and evo["other_halves"] == [0.94] * 10
    small = rows["evolution_p10"]  # better on 4 seeds, worse on 4: no verdict either way
    assert (small["wins"], small["ties"], small["losses"]) == (4, 2, 4)
    assert small["verdict"] == "not clearly different" and small["same_configs_as_random"] == 0
    assert et.verdict(0, 6, -0.01) == "worse" and et.verdict(0, 5, -0.01) == "not clearly different"  # p 0.03, 0.06
    assert et.verdict(0, 0, 0.0) == "no different" and et.sign_test(0, 0) == 1.0
    assert et.verdict(6, 0, -0.01) == "not clearly different"  # the mean must agree


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
    adapt = json.loads((tmp_path / "runs" / "sparsevit-issue23" / "config.json").read_text())
    assert adapt["task"] == "sparsevit_adapt" and adapt["init"] == str(tmp_path / "runs" / "swin")
    assert "`python benchmarks/efficient_training.py --quick`" in md and "do not edit by hand" in md
    from vitkit.bench.measure import environment
    assert saved["machine"] == environment()["machine"] and f"Machine: {saved['machine']}" in md
    assert md.count("| `") == 6 and "| Stand-alone local attention (3x3) | `local_vit_nano_28` |" in md
    assert ("is met" if sp["target_met"] else "is **not met**") in md
    assert saved["before"] is None and "top-1 before" not in md and "Swin weights: before" not in md
    check_search(et, saved["search"], md)
    # the header says how many runs the invocation found finished: none the first time
    assert saved["reused_runs"] == 0 and "reusing" not in md

    # again, with the first results as --before and three families carried over from them: the three
    # re-trained rows are the finished runs (reused), so after equals before everywhere
    et.main(["--quick", "--work", str(tmp_path / "runs"), "--out", str(tmp_path),
             "--before", str(tmp_path / "efficient_training_quick.json"), "--keep", "pvt,axial,local"])
    again = json.loads((tmp_path / "efficient_training_quick.json").read_text())
    md = (tmp_path / "efficient_training_quick.md").read_text()
    assert again["kept"] == ["pvt", "axial", "local"] and again["runs"] == again["reused_runs"] == 3
    assert "reusing all 3 runs already finished" in md and "--keep pvt,axial,local" in md
    assert again["before"]["families"] == saved["families"] and again["before"]["sparsevit"] == saved["sparsevit"]
    for key in ("pvt", "axial", "local"):
        assert again["families"][key] == dict(saved["families"][key], carried=True)
        assert f"| {saved['families'][key]['label']} (carried over) |" in md
    for key, r in again["families"].items():
        assert r["top1"] == saved["families"][key]["top1"], key
        row = next(line for line in md.splitlines() if line.startswith(f"| {r['label']}"))
        assert f"| {100 * r['top1']:.1f} | {100 * r['top1']:.1f} | " in row, key   # before | now
    assert again["sparsevit"] == saved["sparsevit"]
    for r in again["sparsevit"]["rows"]:
        a, b = 100 * r["before_adaptation"], 100 * r["adapted"]
        assert f"| {r['sparsity']:.0%} | {r['windows_kept']} | {a:.1f} | {a:.1f} | {b:.1f} | {b:.1f} |" in md
    assert set(again["changes"]) == {"efficientvit", "sparsevit"} and "shifted block" in md
    # the latency window holds every config in --quick, so the searches do not depend on the timings
    # (which of the configs tied at the best score is found: the fastest, by the re-measured table)
    assert [{k: v for k, v in r.items() if k != "found"} for r in again["search"]["windows"][0]["summary"]] == \
        [{k: v for k, v in r.items() if k != "found"} for r in saved["search"]["windows"][0]["summary"]]


def check_search(et, s, md):
    """The search section's numbers hang together (protocol 3) and its verdict is theirs."""
    spec = et.SEARCH_QUICK
    assert s["space"] == 9 ** 3 and s["classes_in_space"] == 9 * 4 * 1  # kept windows: 9 counts of 16, 4 of 4
    assert s["score_images"] + s["other_images"] == spec["images"]
    assert len(s["table"]["pair_ms"]) == 3 and all(len(r) == 9 for r in s["table"]["pair_ms"])
    (w,) = s["windows"]
    assert w["in_window"] == s["space"]  # --quick: a window around everything
    assert s["classes_evaluated"] == len(w["classes"]) == s["classes_in_space"]
    assert sum(k["configs"] for k in w["classes"]) == w["in_window"]
    assert w["classes"][0]["score"] == w["window_best"] == max(k["score"] for k in w["classes"])
    for k in w["classes"]:
        assert f"| {k['kept']} | {k['configs']} | " in md
    from vitkit.models.sparsevit import table_latency_fn
    latency = table_latency_fn(s["table"])
    lo, hi = w["window_ms"]
    summary = {(r["method"], r["budget"]): r for r in w["summary"]}
    assert list(summary) == [(m, b) for m in spec["methods"] for b in spec["budgets"]]
    for (method, budget), r in summary.items():
        assert len(r["scores"]) == len(r["found"]) == len(r["evaluated"]) == len(spec["seeds"])
        assert r["mean"] == pytest.approx(sum(r["scores"]) / len(spec["seeds"]))
        assert r["found_window_best"] == sum(v == w["window_best"] for v in r["scores"])
        by_kept = {tuple(k["kept"]): k for k in w["classes"]}
        for found, score, other, n in zip(r["found"], r["scores"], r["other_halves"], r["evaluated"]):
            config = [float(v.rstrip("%")) / 100 for v in re.split("[/,]", found)]
            assert lo <= latency(config) <= hi and 0 < n <= budget
            k = by_kept[tuple(max(1, math.ceil((1 - c) * n_w - 1e-9)) for c, n_w in zip(config, [16, 4, 1]))]
            assert (k["score"], k["other_half"]) == (score, other)  # the window's table scores it the same
        if method == "evolution":  # population 100: no parents before 100 evaluations, so random search's draws
            assert r["same_configs_as_random"] == len(spec["seeds"]) and r["verdict"] == "no different"
    # one window: the pooled comparison is the window's
    pooled = {(p["method"], p["budget"]): p for p in s["pooled"]}
    assert set(pooled) == {k for k in summary if k[0] != "random"}
    for k, p in pooled.items():
        assert (p["wins"], p["ties"], p["losses"], p["verdict"]) == tuple(
            summary[k][f] for f in ("wins", "ties", "losses", "verdict"))
        assert f"budget {k[1]}: **{p['verdict']}** " in md
    assert "## SparseViT: evolutionary vs random search at the same budget" in md
    verdict = "Yes" if any(p["verdict"] == "better" for (m, _), p in pooled.items() if m == "evolution") else "No"
    assert f"at the same budget here? **{verdict}**" in md
