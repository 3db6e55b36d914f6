"""build_run / load_run: a run is a pure function of its config."""
import torch

from vitkit.train import TrainConfig
from vitkit.train.run import build_run


def test_initial_weights_depend_only_on_the_seed():
    cfg = TrainConfig(model="vit_nano_patch2_8", data="digits", seed=3)
    a = build_run(cfg)[0].state_dict()
    torch.randn(100)  # whatever happened to the global RNG before
    b = build_run(cfg)[0].state_dict()
    c = build_run(cfg.replace(seed=4))[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


def test_model_is_sized_for_the_data():
    model, task, loaders, bundle, meta = build_run(TrainConfig(model="vit_nano_patch4_28", data="digits",
                                                               img_size=28))
    assert model.input_size == (1, 28, 28) and model.num_classes == 10
    x, y = next(iter(loaders["train"]))
    assert x.shape[1:] == (1, 28, 28)
    assert meta["classes"] == [str(i) for i in range(10)] and len(meta["mean"]) == 1


def test_a_distilled_model_trains_from_the_cli_path(tmp_path):
    from vitkit.train import fit
    cfg = TrainConfig(model="deit_nano_distilled_patch2_8", data="digits", epochs=1, batch_size=64,
                      out=str(tmp_path / "run"), num_threads=1)
    model, task, loaders, bundle, meta = build_run(cfg)
    result = fit(model, task, loaders, cfg, meta)
    assert result["test_count"] == len(bundle.test)


def test_a_checkpoint_folder_is_not_taken_for_a_run(tmp_path, capsys):
    """`vitkit convert` (and HF / timm) folders hold config.json + model.safetensors too: `eval` on one used
    to fail with an internal KeyError ('input_size'); it names what the folder is and what to do instead."""
    import json

    import pytest

    from vitkit.cli import main
    from vitkit.models import create_model
    from vitkit.train.run import load_run
    model = create_model("vit_nano_patch4_28")
    for name, config in {"vitkit": {"format": "vitkit", "model": "vit_nano_patch4_28", "model_config": {}},
                         "hf": {"model_type": "vit", "hidden_size": 64},
                         "timm": {"architecture": "vit_tiny_patch16_224", "num_classes": 10}}.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        from safetensors.torch import save_file
        save_file(model.state_dict(), str(folder / "model.safetensors"))
        with pytest.raises(ValueError, match=f"{name} checkpoint folder, not a training run.*--init {folder}"):
            load_run(folder)
        assert main(["eval", str(folder)]) != 0
        err = capsys.readouterr().err
        assert "not a training run" in err and "internal error" not in err


def test_a_run_fine_tuned_from_a_checkpoint_is_still_a_run(tmp_path):
    # a run's config.json carries its --init source's keys (timm's "architecture", HF's "model_type") beside
    # its TrainConfig fields: it stays a run (this once refused a run fine-tuned from a timm hub ViT)
    from vitkit.train.run import _check_is_run
    for extra in ({"architecture": "vit_tiny_patch16_224"}, {"model_type": "vit"}, {"format": "vitkit"}):
        _check_is_run(tmp_path, {"task": "classify", "data": "mnist5k", "epochs": 2, **extra})
