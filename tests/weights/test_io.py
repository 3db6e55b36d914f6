"""The one safe reader: safetensors, weights-only torch pickles, npz without pickles; clear one-line errors."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from vitkit.weights.io import find_weights, load_weights_file, save_weights


class Payload:
    """Unpickling this runs code: it creates ``marker`` (a stand-in for anything worse)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _one_line_error(path, match):
    with pytest.raises(ValueError) as e:
        load_weights_file(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg
    return msg


@pytest.mark.parametrize("zip_format", [True, False], ids=["torch-zip", "legacy-pickle"])
def test_pickle_with_code_payload_is_refused_and_never_runs(tmp_path, zip_format):
    marker = tmp_path / "payload_ran"
    path = tmp_path / ("evil.pth" if zip_format else "evil.bin")
    obj = {"w": torch.ones(2), "x": Payload(marker)}
    if zip_format:
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    msg = _one_line_error(path, "refused")
    assert "weights_only=True" in msg
    assert not marker.exists()  # the payload did not run
    # ... and it is a real payload: plain unpickling would have run it
    check = tmp_path / "plain_pickle_runs_it"
    pickle.loads(pickle.dumps(Payload(check)))
    assert check.exists()


def test_truncated_and_random_files_give_one_line_errors(tmp_path):
    good = tmp_path / "w.safetensors"
    save_weights(good, {"a": torch.randn(64, 64)})
    data = good.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(tmp_path / "half.safetensors", "not a valid safetensors file (truncated or corrupt)")
    noise = np.random.default_rng(0).bytes(4096)
    for name, match in [("noise.safetensors", "not a valid safetensors"), ("noise.bin", "neither a valid"),
                        ("noise.pth", "neither a valid"), ("noise.npz", "not a valid .npz"),
                        ("noise.dat", "not a weights file")]:
        (tmp_path / name).write_bytes(noise)
        _one_line_error(tmp_path / name, match)
    torch.save({"a": torch.ones(3)}, tmp_path / "t.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "t.pt").read_bytes()[:300])
    _one_line_error(tmp_path / "cut.pt", "truncated")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_weights_file(tmp_path / "absent.safetensors")


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, w=np.ones(3, dtype=np.float32), o=np.array([{"a": 1}], dtype=object))
    _one_line_error(path, "Python objects")
    np.savez(tmp_path / "ok.npz", **{"a/kernel": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert torch.equal(load_weights_file(tmp_path / "ok.npz")["a/kernel"], torch.arange(6.0).reshape(2, 3))


def test_formats_are_sniffed_and_training_checkpoints_unwrapped(tmp_path):
    sd = {"a": torch.randn(2, 3), "b": torch.arange(4)}
    save_weights(tmp_path / "named_oddly.bin", sd)            # safetensors under another extension
    torch.save({"epoch": 3, "state_dict": sd, "optimizer": {"lr": 0.1}}, tmp_path / "train.pth")
    torch.save({"model": sd}, tmp_path / "deit_style.pth")
    torch.save(sd, tmp_path / "noext")                          # torch zip without an extension
    for name in ("named_oddly.bin", "train.pth", "deit_style.pth", "noext"):
        out = load_weights_file(tmp_path / name)
        assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd), name
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "meta.pt")
    _one_line_error(tmp_path / "meta.pt", "does not hold a state dict")


def test_save_is_atomic_and_folders_resolve(tmp_path):
    save_weights(tmp_path / "model.safetensors", {"a": torch.ones(2)})
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]  # no temp file left behind
    (tmp_path / "train_state.pt").write_bytes(b"x")                 # not a weights file
    assert find_weights(tmp_path) == [tmp_path / "model.safetensors"]

    shards = tmp_path / "sharded"
    save_weights(shards / "model-00001-of-00002.safetensors", {"a": torch.ones(1)})
    save_weights(shards / "model-00002-of-00002.safetensors", {"b": torch.zeros(1)})
    (shards / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert [p.name for p in find_weights(shards)] == ["model-00001-of-00002.safetensors",
                                                      "model-00002-of-00002.safetensors"]

    two = tmp_path / "two"
    save_weights(two / "a.safetensors", {"a": torch.ones(1)})
    save_weights(two / "b.safetensors", {"a": torch.ones(1)})
    with pytest.raises(ValueError, match="several weights files"):
        find_weights(two)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights file in"):
        find_weights(tmp_path / "empty")
