"""docs/DESIGN.md's checklist "Add a model family", followed once end to end.

A throwaway family is written as a module in a temporary folder (nothing in the repository changes):
a frozen config dataclass and a model with the API every family has, registered with
``@register_model``. Importing the module is all it takes: the registry lists it, ``vitkit models``
shows it, ``create_model`` builds it, ``vitkit train`` trains it (and draws its pictures), and
``load_run`` and ``vitkit eval`` give back the model it trained. A separate ``vitkit`` process finds it
through a launcher that imports the module first; docs/DESIGN.md (sections 11 and 12) says why and what
would make a plain ``vitkit`` find it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.models import create_model, list_models, registry
from vitkit.train import load_weights_file
from vitkit.train.run import load_run

pytestmark = pytest.mark.slow

NAME = "toyvit_pico_patch2_8"

FAMILY = '''
"""A throwaway family for tests/test_add_a_family.py: a pico ViT, built from vitkit.layers only."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vitkit.layers import Block, LearnedPosEmbed, PatchEmbed, check_image, to_2tuple
from vitkit.layers.init import init_patch_embed_, init_transformer_
from vitkit.models.heads import linear_head, pack_intermediates
from vitkit.models.registry import build_from_config, register_model


@dataclass(frozen=True)
class ToyConfig:
    img_size: int | tuple[int, int] = 8
    in_chans: int = 1
    num_classes: int = 10
    patch_size: int = 2
    embed_dim: int = 32
    depth: int = 2
    num_heads: int = 2
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if isinstance(self.img_size, list):  # from config.json
            object.__setattr__(self, "img_size", tuple(self.img_size))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")


class ToyViT(nn.Module):
    """(B, C, H, W) -> logits (B, num_classes); forward_features -> normed tokens (B, 1 + N, D)."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_classes, self.num_features, self.num_prefix_tokens = cfg.num_classes, D, 1
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, D)
        self.grid_size = self.patch_embed.grid_size
        self.input_size = (cfg.in_chans, *to_2tuple(cfg.img_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = LearnedPosEmbed(self.grid_size, D, num_prefix_tokens=1)
        self.blocks = nn.ModuleList([Block(D, cfg.num_heads, mlp_ratio=2.0) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = linear_head(D, cfg.num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        init_transformer_(self)                       # Linear: trunc normal 0.02; LayerNorm: 1, 0
        init_patch_embed_(self.patch_embed.proj)      # patch embed initialised like a Linear
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed.weight, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed.weight"}

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = linear_head(self.num_features, num_classes, zero=True, like=self.cls_token)

    def _run(self, x, return_attention=False):
        check_image(x, self.cfg.in_chans, self.input_size[1:], what="ToyViT")
        x = self.patch_embed(x)
        x = self.pos_embed(torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1), self.grid_size)
        hidden, attns = [], []
        for blk in self.blocks:
            hidden.append(x)
            if return_attention:
                x, a = blk(x, return_attention=True)
                attns.append(a)
            else:
                x = blk(x)
        hidden.append(x)
        return self.norm(x), hidden, attns

    def forward_features(self, x):
        return self._run(x)[0]

    def forward_intermediates(self, x, return_attention=False):
        feats, hidden, attns = self._run(x, return_attention)
        return pack_intermediates(feats, attns, return_attention, hidden_states=hidden)

    def forward_head(self, x, pre_logits=False):
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@register_model
def toyvit_pico_patch2_8(**kw) -> ToyViT:
    """A pico ViT for scikit-learn's 8x8 digits: P=2, D=32, 2 blocks, 2 heads."""
    return ToyViT(build_from_config(ToyConfig, ToyConfig(name="toyvit_pico_patch2_8"), kw))
'''


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """The family's module, written to a temporary folder and imported; unregistered afterwards."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "toy_family.py").write_text(FAMILY)
    before = set(registry._MODELS)
    spec = importlib.util.spec_from_file_location("toy_family", folder / "toy_family.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_family"] = module  # dataclasses and typing.get_type_hints look the module up
    spec.loader.exec_module(module)
    yield module
    for name in set(registry._MODELS) - before:
        del registry._MODELS[name]
    del sys.modules["toy_family"]


@pytest.fixture(scope="module")
def run_dir(family, tmp_path_factory):
    """``vitkit train --model toyvit_pico_patch2_8 --data digits --epochs 3``, in this process."""
    out = tmp_path_factory.mktemp("runs") / "toy"
    assert main(["train", "--model", NAME, "--data", "digits", "--epochs", "3", "--batch-size", "64", "--lr", "3e-3",
                 "--warmup", "0.5", "--out", str(out), "--seed", "0", "--threads", "1"]) == 0
    return out


def test_the_registry_and_vitkit_models_list_it(family, capsys):
    assert list_models("toyvit_*") == [NAME] and vitkit.list_models(NAME) == [NAME]
    assert main(["models", "toyvit_*"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith(NAME)]
    n = sum(p.numel() for p in create_model(NAME, device="meta").parameters())
    assert len(line) == 1 and f"{n / 1e6:.2f}M" in line[0] and "(1, 8, 8)" in line[0]


def test_create_model_builds_it_with_the_registry_checks(family):
    model = create_model(NAME, num_classes=3).eval()
    assert isinstance(model, family.ToyViT) and model.cfg.name == NAME
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 3)
    assert model.forward_features(x).shape == (2, 1 + 16, model.num_features)
    with torch.no_grad():
        assert torch.equal(model.forward_intermediates(x)["features"], model.forward_features(x))
        out = model.forward_intermediates(x, return_attention=True)
    assert len(out["hidden_states"]) == 3 and out["attentions"][0].shape == (2, 2, 17, 17)
    with pytest.raises(TypeError, match="unknown option"):       # build_from_config names the field
        create_model(NAME, embed_dimm=16)
    with pytest.raises(ValueError, match="depth must be an integer"):
        create_model(NAME, depth="two")
    with pytest.raises(ValueError, match="1 input channel"):       # check_image at the model's door
        model(torch.randn(2, 3, 8, 8))


def test_vitkit_train_trains_it_and_draws_its_pictures(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == NAME and config["model_config"]["name"] == NAME
    for f in ("model.safetensors", "train_state.pt", "metrics.jsonl", "report.json",
              "curves.png", "confusion.png", "rollout.png", "pos_embed.png", "patch_filters.png"):
        assert (run_dir / f).is_file(), f
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in lines if x["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] and epochs[-1]["test_acc"] > 0.2  # chance: 0.1


def test_load_run_gives_back_the_model_it_trained(family, run_dir, capsys):
    run = load_run(run_dir)
    assert isinstance(run.model, family.ToyViT) and run.kind == "classifier" and run.weights == "model"
    fresh = create_model(NAME, **{k: v for k, v in run.config["model_config"].items() if k != "name"}).eval()
    fresh.load_state_dict(load_weights_file(run_dir / "model.safetensors"))
    x = torch.randn(4, *run.input_size)
    with torch.no_grad():
        assert torch.equal(run.model(x), fresh(x))
    last = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert main(["eval", str(run_dir), "--json"]) == 0            # the trained figure, from the saved weights
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert said["test_count"] == last["test_count"] and said["test_acc"] == pytest.approx(last["test_acc"], abs=1e-9)


def _vitkit(args: list[str], env: dict | None = None, launcher: Path | None = None) -> subprocess.CompletedProcess:
    """A separate process: ``vitkit ARGS`` (``python -m vitkit``), or through a launcher script."""
    cmd = [sys.executable, str(launcher), *args] if launcher else [sys.executable, "-m", "vitkit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VITKIT_NO_PROGRESS": "1", **(env or {})})


def test_a_separate_process_finds_it_through_a_launcher(family, run_dir, tmp_path):
    """docs/DESIGN.md section 11: a launcher that imports the family, then runs vitkit's main."""
    launcher = tmp_path / "my_vitkit.py"
    launcher.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(Path(family.__file__).parent)!r})
        import toy_family  # noqa: F401  (registers the family)
        from vitkit.cli import main
        sys.exit(main(sys.argv[1:]))
        """))
    done = _vitkit(["eval", str(run_dir), "--json"], launcher=launcher)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["test_count"] == 359
    plain = _vitkit(["eval", str(run_dir)])                       # plain vitkit knows the built-in families only
    assert plain.returncode == 1 and f"unknown model {NAME!r}" in plain.stderr


def test_a_separate_process_finds_the_family_through_vitkit_plugins(family, run_dir):
    folder = str(Path(family.__file__).parent)
    path = os.pathsep.join([folder, os.environ.get("PYTHONPATH", "")])
    done = _vitkit(["eval", str(run_dir), "--json"], env={"VITKIT_PLUGINS": "toy_family", "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
