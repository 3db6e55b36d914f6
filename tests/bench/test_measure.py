"""vitkit.bench.measure: FLOPs match a hand count (attention and Linear layers included; the counter runs
with vitkit's CPU fast paths off, as it cannot see oneDNN calls), the memory readers match known
allocations, the matmul peak is the best library's."""
import pytest
import torch

import vitkit
from vitkit.bench.measure import alloc_peak, forward_flops, matmul_peak, rss_peak

MiB = 2 ** 20


def _check_flops_by_hand():
    model = vitkit.create_model("vit_nano_patch4_28").eval()
    c = model.cfg
    assert (c.img_size, c.patch_size, c.in_chans, c.embed_dim, c.depth, c.mlp_ratio, c.class_token) == \
        (28, 4, 1, 64, 4, 2.0, True)
    N, D, H = 7 * 7, 64, 128
    T = N + 1                                             # + class token
    block = (2 * T * D * 3 * D                            # qkv
             + 2 * (2 * T * T * D)                        # q k^T and attn v
             + 2 * T * D * D                              # proj
             + 2 * (2 * T * D * H))                       # mlp fc1, fc2
    expected = 2 * N * D * 4 * 4 + c.depth * block + 2 * D * c.num_classes
    with torch.inference_mode():
        assert forward_flops(model, torch.randn(1, 1, 28, 28)) == expected


def test_flops_count_linear_layers_and_attention_by_hand():
    _check_flops_by_hand()                         # at this size: F.linear and attend's explicit path


def test_flops_count_the_sdpa_kernel(sdpa_path):
    _check_flops_by_hand()                         # the attention path a long sequence takes on the CPU


def test_alloc_peak_follows_the_allocator():
    x = torch.randn(256, 1024)  # 1 MiB, allocated before: not counted

    def fn():
        a = x * 2               # +1 MiB
        b = a + 1               # +1 MiB: 2
        del a                   # 1
        c = torch.cat([b, b])   # +2 MiB: 3 (the peak)
        del b
        return c.sum()

    peak = alloc_peak(fn, torch.device("cpu"))
    if peak is None:
        pytest.skip("this PyTorch's profiler does not expose allocator events")
    assert 3 * MiB <= peak < 3 * MiB + 4096


def test_rss_peak_sees_memory_made_resident():
    def touch():
        t = torch.ones(16 * MiB)  # 64 MiB, written: resident
        return float(t[-1])

    peak = rss_peak(touch)
    if peak is None:
        pytest.skip("needs Linux /proc and glibc")
    assert 63 * MiB <= peak < 80 * MiB
    assert rss_peak(lambda: None) < 4 * MiB  # the first call's 64 MiB were handed back, not counted again


def test_matmul_peak_reports_each_library_at_a_plausible_rate():
    from vitkit.layers.linear import _AVAILABLE  # measured wherever oneDNN exists, even with VITKIT_ONEDNN=0
    res = matmul_peak([(64, 64, 64), (128, 256, 64)], repeats=1)
    libs = {k: v for k, v in res.items() if k != "peak"}
    assert set(libs) == ({"torch.mm", "onednn"} if _AVAILABLE else {"torch.mm"})
    # GFLOP/s of a real CPU (2 * m * k * n per call): a unit slip (ms vs s, FLOPs vs MACs) leaves this band
    assert all(0.05 < v < 1e5 for v in libs.values()) and res["peak"] in libs.values()


def test_interleaved_runs_blocks_of_consecutive_calls():
    import time

    from vitkit.bench.measure import interleaved
    counts = {"fast": 0, "slow": 0}

    def fast():
        counts["fast"] += 1

    def slow():
        counts["slow"] += 1
        time.sleep(0.03)
    res = interleaved({"fast": fast, "slow": slow}, repeats=2, min_block_s=0.02, settle_s=0.001)
    assert res["slow"]["calls"] == 1 and res["fast"]["calls"] > 100  # a block lasts >= 0.02 s
    # one warm-up call, one untimed block that counts the calls, two timed blocks
    assert counts == {"fast": 1 + 3 * res["fast"]["calls"], "slow": 1 + 3}
    assert 0.03 <= res["slow"]["median"] < 0.2 and res["fast"]["median"] < 1e-4


def test_interleaved_blocks_last_min_block_s_after_a_slow_first_call():
    import time

    from vitkit.bench.measure import interleaved
    first = [True]

    def cold_then_fast():                 # a first call 50x slower than the rest (a first optimizer step)
        time.sleep(0.05 if first[0] else 0.001)
        first[0] = False
    res = interleaved({"f": cold_then_fast}, repeats=2, min_block_s=0.1)["f"]
    assert res["calls"] >= 50  # ~0.1 s of 1 ms calls (sized from the cold first call alone: 2)


def test_command_names_every_option_off_its_default_and_runs_again():
    import argparse
    import shlex

    from vitkit.bench.measure import command
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sizes", type=int, nargs="+")
    p.add_argument("--peers", default="hf,onnxruntime")
    p.add_argument("--out", default="results")
    argv = ["--quick", "--sizes", "64", "96", "--peers", "", "--repeats", "7", "--out", "elsewhere"]
    args = p.parse_args(argv)
    cmd = command("python benchmarks/x.py", args, p)
    # the default --repeats and the output folder are left out; the empty --peers survives quoting
    assert cmd == "python benchmarks/x.py --quick --sizes 64 96 --peers ''"
    assert vars(p.parse_args(shlex.split(cmd)[2:])) == {**vars(args), "out": "results"}
    assert command("vitkit bench", p.parse_args([]), p) == "vitkit bench"
