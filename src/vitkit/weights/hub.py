"""``hf:org/name[@revision]`` -> a folder in the local Hugging Face cache, never over the network.

The lookup is ``huggingface_hub.snapshot_download(..., local_files_only=True)`` (what
``HF_HUB_OFFLINE=1`` does): a repository that is not in the cache is an error that says where its
files belong. The cache is ``$HF_HUB_CACHE`` (default ``~/.cache/huggingface/hub``), read at call time.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

PREFIX = "hf:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(src: object) -> bool:
    return isinstance(src, str) and src.startswith(PREFIX)


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def resolve(spec: str) -> Path:
    """The local snapshot folder of ``hf:org/name`` (``@revision``: a branch, tag or commit)."""
    repo = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    repo, _, revision = repo.partition("@")
    if not _REPO.match(repo):
        raise ValueError(f"{spec!r} is not a hub id; write hf:org/name (e.g. hf:google/vit-base-patch16-224)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{spec}: hub ids need huggingface_hub (pip install 'vitkit[hf]'); "
                         "or pass the checkpoint folder's path") from None
    cache = cache_dir()
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision or None, cache_dir=str(cache),
                                      local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: not in the cache
        where = cache / f"models--{repo.replace('/', '--')}"
        raise FileNotFoundError(
            f"{spec} is not in the local Hugging Face cache (looked in {where}); vitkit never downloads. "
            f"On a machine with network run `hf download {repo}` and copy its cache folder here "
            f"(or point HF_HUB_CACHE at it), or pass the checkpoint folder's path instead") from None
