"""Tiny run folders of every kind `vitkit` writes, built once per test process through the CLI itself.

    run_folders("classify", "mae")  -> {"classify": Path, "mae": Path}   (built on first use, then reused)

Each is one epoch on scikit-learn's 8x8 digits with a 0.14M ViT (or a tiny tokenizer / generator):
seconds each, but real run folders, written by `vitkit train` / `vitkit pretrain` as a user's are.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitkit.cli import main

BASE = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-report"]
VIT = ["--model", "vit_nano_patch2_8", *BASE]
TOKENIZER = ["--set", "task_args.channels=[8,16]", "--set", "task_args.codebook_size=16",
             "--set", "task_args.embed_dim=4"]
GENERATOR = ["--set", "task_args.dim=16", "--set", "task_args.depth=1", "--set", "task_args.num_heads=2"]

# kind -> (what it needs built first, the arguments of the command that writes it; {name} = that run's folder)
RECIPES = {
    "classify": ((), ["train", *VIT]),
    "probe": (("classify",), ["train", *VIT, "--init", "{classify}", "--probe"]),
    "distill": (("classify",), ["train", "--model", "deit_nano_distilled_patch2_8", *BASE, "--teacher", "{classify}"]),
    "mae": ((), ["pretrain", "--task", "mae", *VIT]),
    "simclr": ((), ["pretrain", "--task", "simclr", *VIT]),
    "mocov3": ((), ["pretrain", "--task", "mocov3", *VIT]),
    "clip": ((), ["pretrain", "--task", "clip", *VIT, "--set", "task_args.embed_dim=32",
                  "--set", "task_args.text_args.width=32", "--set", "task_args.text_args.depth=1"]),
    "vq": ((), ["pretrain", "--task", "vq", *BASE, *TOKENIZER]),
    "msvq": ((), ["pretrain", "--task", "vq", *BASE, *TOKENIZER, "--set", "task_args.kind=multiscale"]),
    "hybrid": ((), ["pretrain", "--task", "vq", *BASE, *TOKENIZER, "--set", "task_args.kind=hybrid"]),
    "ar": (("vq",), ["pretrain", "--task", "ar", *BASE, *GENERATOR, "--set", "task_args.tokenizer={vq}"]),
    "var": (("msvq",), ["pretrain", "--task", "var", *BASE, *GENERATOR, "--set", "task_args.tokenizer={msvq}"]),
    "hart": (("hybrid",), ["pretrain", "--task", "hart", *BASE, *GENERATOR, "--set", "task_args.tokenizer={hybrid}"]),
    "sparsevit_adapt": ((), ["train", "--task", "sparsevit_adapt", "--model", "sparsevit_swin_nano_patch2_window4_28",
                             *BASE, "--img-size", "8"]),
}
KINDS = tuple(RECIPES)


@pytest.fixture(scope="session")
def run_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    built: dict[str, Path] = {}

    def build(*kinds: str) -> dict[str, Path]:
        for kind in kinds:
            if kind in built:
                continue
            needs, argv = RECIPES[kind]
            build(*needs)
            out = root / kind
            argv = [a.format(**{k: built[k] for k in needs}) for a in argv]
            assert main([*argv, "--out", str(out)]) == 0, kind
            built[kind] = out
        return {k: built[k] for k in kinds}
    return build


@pytest.fixture
def copy_run(run_folders, tmp_path):
    """A private copy of a run folder of one kind (a test that changes a folder changes only its copy)."""
    def copy(kind: str, name: str | None = None) -> Path:
        dst, n = tmp_path / (name or f"{kind}_copy"), 1
        while dst.exists():  # a second copy of the same kind in one test
            dst, n = tmp_path / f"{name or kind + '_copy'}{n}", n + 1
        shutil.copytree(run_folders(kind)[kind], dst)
        return dst
    return copy


@pytest.fixture(scope="session")
def digit_png():
    """``digit_png(path, index=0, mode="L", size=8)``: held-out digit ``index`` of scikit-learn's digits
    written as an image file (any format Pillow names by the suffix); returns the path."""
    from vitkit.data import build
    test = build("digits").test

    def write(path: Path, index: int = 0, mode: str = "L", size: int = 8) -> Path:
        x, _ = test[index]
        img = Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8)).resize((size, size))
        path.parent.mkdir(parents=True, exist_ok=True)
        img.convert(mode).save(path)
        return path
    return write
