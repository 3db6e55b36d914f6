"""vitkit's own state dicts: every key is already ours (any family, not only ViT)."""
from __future__ import annotations

from .mapping import KeyMap, Rule, register_format

VITKIT = register_format(KeyMap(
    name="vitkit",
    description="vitkit",
    rules=(Rule("{rest}", "{rest}"),),
    signature=(r"",),  # the fallback: keys no other format claims are taken as vitkit's own
    priority=90,
))
