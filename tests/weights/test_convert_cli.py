"""`vitkit convert SRC DST --to {vitkit,hf,timm}` through the CLI, and its one-line errors."""
import json
import pickle

import numpy as np
import pytest
import torch

from vitkit.cli import main
from vitkit.weights import from_checkpoint, read_checkpoint
from weights_helpers import hf_vit


def _convert(capsys, *argv):
    rc = main(["convert", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out.strip(), out.err.strip()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_convert_round_trips_through_every_layout(transformers, tmp_path, capsys):
    hf = hf_vit(transformers, num_labels=10)
    hf.save_pretrained(tmp_path / "hf")
    original = from_checkpoint(tmp_path / "hf")
    chain = [("hf", "vitkit", "v"), ("v", "timm", "t"), ("t", "hf", "h2"), ("h2", "timm", "t2"), ("t2", "vitkit", "v2"),
             ("v2", "hf", "h3")]
    for src, to, dst in chain:
        rc, out, err = _convert(capsys, tmp_path / src, tmp_path / dst, "--to", to)
        assert rc == 0, err
        assert f"({to})" in out and "\n" not in out
        assert read_checkpoint(tmp_path / dst).format.name == ("hf" if to == "hf" else to)
        assert _same_weights(original, from_checkpoint(tmp_path / dst, norm_eps=1e-12)), dst  # bit-exact
    # HF reads the written folder, and (norm eps kept through vitkit's config) gives HF's own outputs
    assert json.loads((tmp_path / "v" / "config.json").read_text())["model_config"]["norm_eps"] == 1e-12
    back = transformers.ViTForImageClassification.from_pretrained(tmp_path / "h3").eval()
    rc, out, err = _convert(capsys, tmp_path / "v", tmp_path / "h4", "--to", "hf")
    direct = transformers.ViTForImageClassification.from_pretrained(tmp_path / "h4").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (direct(x).logits - hf(x).logits).abs().max() < 1e-5
        assert torch.isfinite(back(x).logits).all()


def test_convert_a_bare_state_dict_needs_the_model_name(tmp_path, capsys):
    import vitkit
    model = vitkit.create_model("vit_nano_patch4_28")
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # no config.json: heads unknown
    rc, out, err = _convert(capsys, tmp_path / "bare.pth", tmp_path / "o", "--to", "timm")
    assert rc == 1 and "heads" in err and "--model" in err and err.count("\n") == 0
    rc, out, err = _convert(capsys, tmp_path / "bare.pth", tmp_path / "o", "--to", "timm",
                            "--model", "vit_nano_patch4_28")
    assert rc == 0, err
    assert _same_weights(model, from_checkpoint(tmp_path / "o", norm_eps=model.cfg.norm_eps))


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    import vitkit
    from vitkit.weights import export
    export(vitkit.create_model("vit_nano_patch4_28"), tmp_path / "good", to="vitkit")
    data = (tmp_path / "good" / "model.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 3])
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(2048))
    marker = tmp_path / "payload_ran"
    with open(tmp_path / "payload.pth", "wb") as f:
        pickle.dump({"w": torch.ones(1), "x": Payload(marker)}, f)
    cases = {"truncated.safetensors": "truncated or corrupt", "random.bin": "neither a valid",
             "payload.pth": "refused", "absent.safetensors": "no checkpoint at"}
    for name, match in cases.items():
        rc, out, err = _convert(capsys, tmp_path / name, tmp_path / "out", "--to", "hf")
        assert rc == 1 and not out
        assert err.startswith("vitkit: error: ") and err.count("\n") == 0, err
        assert name in err and match in err, err
    assert not marker.exists()
    # argparse: --to is required and checked: a usage error (2), one line
    assert main(["convert", str(tmp_path / "good"), str(tmp_path / "o"), "--to", "onnx"]) == 2


def test_the_cli_offers_every_layout_convert_writes():
    from vitkit.cli import CONVERT_TARGETS
    from vitkit.weights.convert import TARGETS
    assert CONVERT_TARGETS == TARGETS
