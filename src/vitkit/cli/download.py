"""``vitkit download NAME|hf:ORG/NAME[@REV]`` and ``vitkit models --pretrained`` (issue 18).

    vitkit download vit_small_patch14_dinov2        the default source of a registered name, into the HF cache
    vitkit download hf:google/vit-base-patch16-224  any repository (what vitkit loads: config, preprocessing, weights)
    vitkit models --pretrained [PATTERN]            names with a default source: repository, layout, citation

Downloads go through huggingface_hub (``vitkit.weights.hub``): HF_HUB_CACHE, HF_ENDPOINT and HF_TOKEN
apply; with HF_HUB_OFFLINE=1 ``download`` only checks the cache. Wiring (``vitkit/cli/__init__.py``):

    from .download import add_download_arguments, add_pretrained_flag
    d = sub.add_parser("download", help="prefetch pretrained weights into the Hugging Face cache")
    add_download_arguments(d); d.set_defaults(func=_lazy("download", "cmd_download"))
    add_pretrained_flag(m)            # on the `models` parser; cmd_models calls cmd_models_pretrained(args)
                                      # first when args.pretrained is set
"""
from __future__ import annotations

import fnmatch
import json

from .common import CLIError


def add_download_arguments(parser) -> None:
    parser.add_argument("source", metavar="NAME|hf:ORG/NAME[@REV]",
                        help="a model name with a default source (see `vitkit models --pretrained`) or a hub id")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def add_pretrained_flag(parser) -> None:
    parser.add_argument("--pretrained", action="store_true",
                        help="only models with a default pretrained source: their repository and citation")


def cmd_download(args) -> int:
    from ..weights import hub
    from ..weights.sources import SOURCES, download
    try:
        folder = download(args.source)
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        raise CLIError(str(e)) from None
    files = sorted(p.name for p in folder.iterdir())
    src = SOURCES.get(args.source)
    out = {"source": args.source, "repo": src.repo if src else hub.parse(args.source)[0],
           "revision": hub.snapshot_commit(folder), "folder": str(folder), "files": files}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['repo']} @ {out['revision'] or '?'} -> {folder} ({', '.join(files)})")
    return 0


def cmd_models_pretrained(args) -> int:
    """``vitkit models --pretrained [PATTERN]``: one line per default source."""
    from ..weights.sources import SOURCES, pretrained_names
    names = [n for n in pretrained_names() if fnmatch.fnmatchcase(n, getattr(args, "pattern", None) or "*")]
    if not names:
        raise CLIError(f"no model with a default source matches {args.pattern!r}")
    width = max(len(n) for n in names)
    repo_width = max(len(SOURCES[n].repo) for n in names)
    print(f"{'model':<{width}}  {'repository':<{repo_width}}  {'layout':<9}  kind")
    for n in names:
        s = SOURCES[n]
        print(f"{n:<{width}}  {s.repo:<{repo_width}}  {s.format:<9}  {s.kind}")
    return 0
