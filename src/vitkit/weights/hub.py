"""``hf:org/name[@revision]`` -> a folder in the Hugging Face cache, downloaded when it is not there.

Every transfer goes through ``huggingface_hub`` (``snapshot_download``): no HTTP code of vitkit's
own. What it honours, read at call time (not only when huggingface_hub was imported):

    HF_HUB_OFFLINE=1   the cache only; a repository that is not cached is a one-line error that
                       says where its files belong and how to fetch them elsewhere
    HF_HUB_CACHE       where files are cached (default ``~/.cache/huggingface/hub``)
    HF_ENDPOINT        the hub's address (a mirror, or a stand-in server in tests)
    HF_TOKEN           private / gated repositories (huggingface_hub reads it)

Only what vitkit loads is downloaded (``select_files``): config.json, the preprocessing and
tokenizer files, and one set of weights: safetensors when the repository has them, else the
torch pickle (read later with ``torch.load(weights_only=True)``, which runs nothing), else
.npz. Files live in the cache under the commit they came from (``snapshots/<sha>``), so a
revision, once resolved, is pinned: ``hf:org/name@<sha>`` names exactly those bytes, and
``snapshot_commit(folder)`` tells which commit a folder holds.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from collections.abc import Iterable
from pathlib import Path

PREFIX = "hf:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

# Files besides the weights that vitkit reads from a repository.
META_FILES = ("config.json", "preprocessor_config.json", "generation_config.json",
              # CLIP's tokenizer (HF CLIPModel repos); load_clip attaches it when present
              "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
# One set of weights, the first group the repository has (safetensors before pickles).
WEIGHT_GROUPS = (
    ("model.safetensors",),
    ("model.safetensors.index.json", "model-*-of-*.safetensors"),
    ("open_clip_model.safetensors",),
    ("pytorch_model.bin",),
    ("pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"),
    ("open_clip_pytorch_model.bin",),
)
_OTHER_WEIGHTS = (".safetensors", ".npz", ".pth", ".pt", ".bin", ".ckpt")  # a lone file of another name


def is_hub_id(src: object) -> bool:
    return isinstance(src, str) and src.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """``hf:org/name@rev`` -> (``org/name``, ``rev`` or None); a ValueError for anything else."""
    repo = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    repo, _, revision = repo.partition("@")
    if not _REPO.match(repo):
        raise ValueError(f"{spec!r} is not a hub id; write hf:org/name (e.g. hf:google/vit-base-patch16-224)")
    return repo, revision or None


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), read now."""
    return _is_true(os.environ.get("HF_HUB_OFFLINE")) or _is_true(os.environ.get("TRANSFORMERS_OFFLINE"))


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def endpoint() -> str:
    """``HF_ENDPOINT``, read now (huggingface_hub reads it once, at import)."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants
    return constants.ENDPOINT


def select_files(files: Iterable[str]) -> list[str]:
    """The files of a repository listing that vitkit needs: its metadata and one set of weights."""
    files = list(files)
    top = [f for f in files if "/" not in f]
    chosen = [f for f in META_FILES if f in top]
    for group in WEIGHT_GROUPS:
        if group[0] in top:
            chosen += [f for f in top if any(fnmatch.fnmatchcase(f, p) for p in group)]
            return chosen
    for ext in _OTHER_WEIGHTS:  # a repository with one weights file of another name (e.g. vit.npz)
        found = sorted(f for f in top if f.endswith(ext) and f not in ("training_args.bin", "optimizer.pt"))
        if found:
            return chosen + found
    return chosen


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ValueError("hub ids need huggingface_hub (pip install 'vitkit[hf]'); "
                         "or pass the checkpoint folder's path") from None
    return huggingface_hub


@contextlib.contextmanager
def _offline_mode(value: bool):
    """huggingface_hub reads HF_HUB_OFFLINE once, at import; make it agree with the environment now."""
    from huggingface_hub import constants
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = value
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _not_cached(spec: str, repo: str, why: str) -> FileNotFoundError:
    where = cache_dir() / f"models--{repo.replace('/', '--')}"
    return FileNotFoundError(
        f"{spec} is not in the local Hugging Face cache (looked in {where}) and {why}. "
        f"Unset HF_HUB_OFFLINE to download it, or on a machine with network run `vitkit download {spec}` "
        f"(or `hf download {repo}`) and copy its cache folder here (or point HF_HUB_CACHE at it), "
        f"or pass the checkpoint folder's path instead")


def _cached_listing(hh, repo: str, revision: str | None) -> list[str] | None:
    get = getattr(hh, "get_cached_repo_tree", None)
    if get is None:
        return None
    try:
        return [f.path for f in get(repo, revision=revision, cache_dir=str(cache_dir()))]
    except Exception:  # no listing cached (a cache filled by other tools): nothing to check against
        return None


def resolve(spec: str, download: bool | None = None) -> Path:
    """The local snapshot folder of ``hf:org/name[@revision]`` (a branch, tag or commit), downloading
    what vitkit needs (``select_files``) unless offline. ``download=False`` forces the cache only;
    None follows ``HF_HUB_OFFLINE``. Every failure is one line."""
    repo, revision = parse(spec)
    hh = _hub()
    local_only = offline() if download is None else not download
    cache = str(cache_dir())
    if local_only:
        listing = _cached_listing(hh, repo, revision)
        patterns = select_files(listing) if listing else None
        try:
            with _offline_mode(True):
                return Path(hh.snapshot_download(repo_id=repo, revision=revision, cache_dir=cache,
                                                 local_files_only=True, allow_patterns=patterns))
        except Exception as e:  # LocalEntryNotFoundError, IncompleteSnapshotError
            why = ("HF_HUB_OFFLINE is set, so nothing is downloaded" if download is None
                   else "downloads are off here")
            if type(e).__name__ == "IncompleteSnapshotError":
                why += " (a cached copy is incomplete: an interrupted download?)"
            raise _not_cached(spec, repo, why) from None
    return _download(hh, spec, repo, revision, cache)


def _download(hh, spec: str, repo: str, revision: str | None, cache: str) -> Path:
    from huggingface_hub import errors
    url = endpoint()
    try:
        with _offline_mode(False):
            info = hh.HfApi(endpoint=url).model_info(repo, revision=revision)
            files = select_files(s.rfilename for s in (info.siblings or []))
            if not any(f.endswith(_OTHER_WEIGHTS) for f in files):
                listed = ", ".join(s.rfilename for s in (info.siblings or [])[:8]) or "nothing"
                raise ValueError(f"{spec}: the repository has no weights file vitkit reads "
                                 f"(safetensors, a torch pickle or .npz); it holds {listed}")
            return Path(hh.snapshot_download(repo_id=repo, revision=revision, cache_dir=cache, endpoint=url,
                                             allow_patterns=files))
    except ValueError:
        raise
    except errors.RevisionNotFoundError:
        raise FileNotFoundError(f"{spec}: {repo} has no revision {revision!r} on {url}") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError) as e:
        gated = isinstance(e, errors.GatedRepoError)
        raise FileNotFoundError(
            f"{spec}: " + (f"{repo} is gated on {url}: accept its terms on the hub and log in (`hf auth login`)"
                           if gated else f"no repository {repo} on {url} (a typo? a private repository needs "
                                         f"`hf auth login` or HF_TOKEN)")) from None
    except Exception as e:  # no connection, a server error: say so in one line
        first = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise ConnectionError(f"{spec}: could not download from {url} ({type(e).__name__}: {first[:160]}); "
                              f"set HF_HUB_OFFLINE=1 to use the local cache only") from None


def snapshot_commit(folder: str | Path) -> str | None:
    """The commit a hub cache folder (``.../snapshots/<sha>``) holds, or None for any other folder."""
    name = Path(folder).name
    return name if _COMMIT.match(name) and Path(folder).parent.name == "snapshots" else None
