"""vitkit bench's precisions (issue 19): --amp resolves per host, the report pairs each row with its peer in
the same precision and the defaults with each other, and names the host."""
import pytest
import torch

from vitkit.bench import speed
from vitkit import hardware


@pytest.mark.parametrize("flags, amp, want, default", [
    ({"avx512_bf16"}, "none,auto", [None, torch.bfloat16], torch.bfloat16),
    ({"avx2"}, "none,auto", [None], None),                      # no native bf16: auto is fp32, one set of rows
    ({"avx2"}, "none,bf16", [None, torch.bfloat16], None),      # asked for: run anyway
    ({"amx_bf16"}, "auto", [torch.bfloat16], torch.bfloat16)])
def test_amp_resolves_on_the_host(monkeypatch, flags, amp, want, default):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert speed.precisions(amp, torch.device("cpu")) == (want, default)


@pytest.mark.parametrize("amp", ["", "int8", "bf16,fp16"])
def test_amp_rejects_what_it_cannot_run(amp):
    with pytest.raises(ValueError, match="--amp"):
        speed.precisions(amp, torch.device("cpu"))


def _row(img_s):
    return {"median": 1 / img_s, "min": 0.9 / img_s, "max": 1.1 / img_s, "img_per_s": img_s, "calls": 1}


def test_report_pairs_rows_in_the_same_precision_and_the_defaults():
    runs = {"vitkit": 20.0, "hf": 10.0, "onnxruntime": 16.0, "onnxruntime int8": 25.0,
            "vitkit bf16": 40.0, "hf bf16": 30.0}
    model = {"model": "vit_small_patch16_224", "batch": 32, "forward_gflop_per_img": 4.6, "params": 1,
             "max_abs_diff": {"hf": 1e-6}, "max_abs_diff_vs_fp32": {"vitkit bf16": 1e-2},
             **{k: {name: _row(v) for name, v in runs.items()} for k in ("infer_b1", "infer_b32")},
             "train": {k: _row(runs[k] / 3) for k in ("vitkit", "hf", "vitkit bf16", "hf bf16")}}
    res = {"machine": "AMD EPYC (AuthenticAMD family 25 model 17; avx512_bf16), 2 cores",
           "host": {"isa": ["avx512_bf16"]}, "torch": "x", "threads": 2, "device": "cpu", "repeats": 1,
           "block_seconds": 0.5, "command": "vitkit bench", "amp": "none,auto", "precisions": ["fp32", "bf16"],
           "default_precision": "bf16", "matmul_gflops": {"torch.mm": 100.0, "peak": 100.0},
           "matmul_gflops_lowp": {"torch.mm": 300.0, "peak": 300.0}, "models": [model]}
    md = speed.report(res)
    assert "Host: **AMD EPYC (AuthenticAMD family 25 model 17; avx512_bf16), 2 cores**" in md
    assert "`amp=\"auto\"` precision on this host is **bf16**" in md and "`vitkit train` run in it" in md
    out_of_box = md.split("## Out of the box")[1].split("## fp32")[0]
    assert "| vit_small_patch16_224 | infer 32 | 40.0 | 10.0 | 4.00x |" in out_of_box   # vitkit bf16 / hf fp32
    fp32 = md.split("## fp32")[1].split("## bf16")[0]
    assert "vitkit / hf" in fp32 and "vitkit / onnxruntime int8" in fp32 and "bf16" not in fp32.split("\n|")[0]
    assert "| 2.00x | 1.25x | 0.80x |" in fp32                                           # vs hf, ort, ort int8
    bf16 = md.split("## bf16 autocast")[1]
    assert "vitkit bf16 / hf bf16" in bf16 and "| 1.33x | 2.50x | 1.60x |" in bf16    # vs hf bf16, ort, ort int8
