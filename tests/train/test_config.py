import json

import pytest

from vitkit.train import TrainConfig


def test_defaults_round_trip_through_dict_and_files(tmp_path):
    cfg = TrainConfig(model="m", epochs=3, betas=(0.9, 0.95), augment={"crop": 2})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_file(tmp_path / "c.json") == cfg
    # YAML reads 1e-3 as a string: floats accept numeric strings
    (tmp_path / "c.yaml").write_text("model: m\nepochs: 3\nlr: 1e-3\nbetas: [0.9, 0.95]\namp: null\n")
    y = TrainConfig.from_file(tmp_path / "c.yaml")
    assert y.lr == 1e-3 and y.betas == (0.9, 0.95) and y.epochs == 3


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"learning_rate.*valid keys.*'lr'"):
        TrainConfig.from_file(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig().replace(bogus=1)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(accum_steps=0), dict(amp="fp8"), dict(lr=-1.0),
                                 dict(device="tpu"), dict(ema_decay=1.0), dict(epochs="ten"), dict(clip_grad=0.0)])
def test_validation(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_replace_revalidates_and_keeps_others():
    cfg = TrainConfig(epochs=5)
    assert cfg.replace(lr=0.01).epochs == 5
    with pytest.raises(ValueError, match="epochs"):
        cfg.replace(epochs=-1)


def test_a_run_folders_config_json_is_a_config_file(tmp_path):
    """`vitkit train --config RUN/config.json` repeats a run: the build metadata `fit` adds is set aside,
    while a hand-written file with an unknown key is still refused."""
    from vitkit.train import checkpoint as ckpt
    cfg = TrainConfig(model="vit_nano_patch4_28", data="digits", epochs=2, lr=3e-4)
    ckpt.write_config(tmp_path, cfg, {"classes": ["0", "1"], "in_chans": 1, "num_params": 5})
    assert TrainConfig.from_file(tmp_path / ckpt.CONFIG_FILE) == cfg
    (tmp_path / "typo.json").write_text(json.dumps({**cfg.to_dict(), "epoch": 3}))
    with pytest.raises(ValueError, match="epoch"):
        TrainConfig.from_file(tmp_path / "typo.json")


def test_optimizer_and_layer_decay_fields():
    cfg = TrainConfig(optimizer="lars", layer_decay="0.75")  # YAML's string spelling of a float
    assert cfg.optimizer == "lars" and cfg.layer_decay == 0.75
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig().optimizer == "adamw" and TrainConfig().layer_decay is None
    for bad in (dict(optimizer="sgd"), dict(layer_decay=0.0), dict(layer_decay=1.5)):
        with pytest.raises(ValueError, match="optimizer|layer_decay"):
            TrainConfig(**bad)
