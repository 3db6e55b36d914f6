"""``forward_intermediates`` is one pass through the network, for every registered family that has it.

docs/DESIGN.md ("The model API") promises that ``forward_intermediates(x)`` returns its dict from the
same single pass that ``forward_features(x)`` makes: every module with weights runs exactly as often,
and ``features`` is ``forward_features(x)``. A family that first computes its hidden states and then
calls ``forward_features`` again runs every block twice (CeiT did; DiversePatch trains through
``forward_intermediates``, so that doubled its training step). Counted with forward hooks on the
smallest registered model of each family, so a family is covered the day it is registered.
"""
from __future__ import annotations

import collections
import functools
import inspect

import pytest
import torch
from torch import nn

from vitkit.models import create_model, list_models

# The dict each family returns (docs/DESIGN.md, "The model API"); a family not listed here must at least
# return ``features`` and its per-block ``hidden_states`` or per-stage ``stages``.
KEYS = {
    "VisionTransformer": {"features", "hidden_states"},
    "CeiT": {"features", "hidden_states"},
    "ConViT": {"features", "hidden_states"},
    "T2TViT": {"features", "hidden_states"},
    "LocalViT": {"features", "hidden_states"},
    "VisualTransformer": {"features", "hidden_states", "feature_maps"},
    "SwinTransformer": {"features", "stages"},
    "SparseViT": {"features", "stages"},
    "PyramidVisionTransformer": {"features", "stages"},
    "EfficientViT": {"features", "stages"},
}


@functools.lru_cache(maxsize=None)
def smallest_per_family() -> dict[str, str]:
    """{model class name: its registered name with the fewest parameters}, families with forward_intermediates."""
    best: dict[str, tuple[int, str]] = {}
    for name in list_models():
        m = create_model(name, device="meta")
        if not hasattr(m, "forward_intermediates"):
            continue
        n = sum(p.numel() for p in m.parameters())
        key = type(m).__name__
        if key not in best or n < best[key][0]:
            best[key] = (n, name)
    return {k: name for k, (_, name) in sorted(best.items())}


FAMILIES = sorted(smallest_per_family().items())


def count_calls(model: nn.Module, fn) -> collections.Counter:
    """How often each module that holds weights of its own runs during ``fn()``."""
    calls: collections.Counter = collections.Counter()
    handles = []
    for name, m in model.named_modules():
        if name and any(True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_hook(lambda mod, args, out, name=name: calls.update([name])))
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return calls


def differences(features: collections.Counter, intermediates: collections.Counter) -> list[str]:
    return [f"{n}: {intermediates[n]} call(s) in forward_intermediates, {features[n]} in forward_features"
            for n in sorted(set(features) | set(intermediates)) if features[n] != intermediates[n]]


def takes_attention(model: nn.Module) -> bool:
    return "return_attention" in inspect.signature(model.forward_intermediates).parameters


def test_every_family_with_intermediates_is_covered():
    """The families of the registry that have forward_intermediates (ResNet has none)."""
    assert set(KEYS) <= set(smallest_per_family()), sorted(set(KEYS) - set(smallest_per_family()))


@pytest.mark.parametrize("family,name", FAMILIES)
def test_intermediates_run_every_module_once(family, name):
    model = create_model(name).eval()
    x = torch.randn(2, *model.input_size)
    once = count_calls(model, lambda: model.forward_features(x))
    assert once, f"{name}: no module with weights ran"
    assert not differences(once, count_calls(model, lambda: model.forward_intermediates(x)))
    if takes_attention(model):
        assert not differences(once, count_calls(model, lambda: model.forward_intermediates(x, return_attention=True)))


@pytest.mark.parametrize("family,name", FAMILIES)
def test_intermediates_features_are_forward_features(family, name):
    model = create_model(name).eval()
    x = torch.randn(2, *model.input_size)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model.forward_intermediates(x)
        assert set(out) == KEYS.get(family, set(out)), f"{name}: {sorted(out)}"
        assert "features" in out and ({"hidden_states", "stages"} & set(out))
        assert torch.equal(out["features"], feats)
        if takes_attention(model):
            with_attn = model.forward_intermediates(x, return_attention=True)
            assert set(with_attn) == set(out) | {"attentions"}
            # the attention maps come from the explicit attention path: the same function, other rounding
            torch.testing.assert_close(with_attn["features"], feats, rtol=1e-5, atol=1e-5)


def test_ceit_intermediates_keep_their_layout():
    """CeiT's fix kept its dict: the embedded input then every block's output, and LCA's class token
    in ``features`` (not the last block's)."""
    model = create_model("ceit_nano_8").eval()
    x = torch.randn(2, *model.input_size)
    with torch.no_grad():
        out = model.forward_intermediates(x)
        hidden = out["hidden_states"]
        assert len(hidden) == model.cfg.depth + 1
        assert torch.equal(out["features"][:, 1:], model.norm(hidden[-1])[:, 1:])
        assert not torch.equal(out["features"][:, 0], model.norm(hidden[-1])[:, 0])  # LCA's class token
