"""A stand-in Hugging Face hub on 127.0.0.1, for tests: the few routes huggingface_hub's
``snapshot_download`` / ``hf_hub_download`` / ``HfApi.model_info`` call (read from huggingface_hub 2.4's
``_snapshot_download.py``, ``hf_api.py`` and ``file_download.py``):

    GET  /api/models/{org}/{name}/revision/{rev}      model info: {"id", "sha", "siblings": [{"rfilename"}]}
    GET  /api/models/{org}/{name}/tree/{rev}[?recursive]  tree listing: [{"type": "file", "path", "size", "oid"}]
    HEAD /{org}/{name}/resolve/{rev}/{file}           headers: ETag, X-Repo-Commit, Content-Length
    GET  /{org}/{name}/resolve/{rev}/{file}           the bytes

Unknown repositories answer 404 with ``X-Error-Code: RepoNotFound``, unknown revisions
``RevisionNotFound``, unknown files ``EntryNotFound`` (the codes huggingface_hub turns into its errors).
Point ``HF_ENDPOINT`` at ``hub.url``. Every request is logged in ``hub.log`` as (method, path).
"""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class StandInHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.log: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._answer(self, head=True)

            def do_GET(self):
                hub._answer(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a free port on loopback only
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ---- content
    def add_repo(self, repo: str, files: dict[str, bytes]) -> str:
        """Serve ``files`` (name -> bytes) as ``repo`` at branch main; returns its commit sha."""
        h = hashlib.sha1(repo.encode())
        for name in sorted(files):
            h.update(name.encode() + hashlib.sha1(files[name]).digest())
        sha = h.hexdigest()
        self.repos[repo] = {"sha": sha, "files": dict(files)}
        return sha

    def add_folder(self, repo: str, folder: str | Path, **extra: bytes) -> str:
        """Serve every file of a folder (e.g. a ``save_pretrained`` output), plus ``extra`` files."""
        files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        return self.add_repo(repo, {**files, **extra})

    def downloads(self) -> list[str]:
        """The files fetched with GET so far (``org/name/file``)."""
        out = []
        for method, path in self.log:
            parts = unquote(urlparse(path).path).strip("/").split("/")
            if method == "GET" and len(parts) > 4 and parts[2] == "resolve":
                out.append("/".join(parts[:2] + parts[4:]))
        return out

    # ---- HTTP
    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        self.log.append((h.command, h.path))
        parts = unquote(urlparse(h.path).path).strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = self.repos.get("/".join(parts[2:4]))
            if repo is None:
                return _send(h, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
            kind, rev = (parts[4], parts[5]) if len(parts) >= 6 else ("revision", "main")
            if rev not in ("main", repo["sha"]):
                return _send(h, 404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}, head)
            if kind == "revision":
                body = {"id": "/".join(parts[2:4]), "sha": repo["sha"],
                        "siblings": [{"rfilename": f} for f in repo["files"]]}
            elif kind == "tree":
                body = [{"type": "file", "path": f, "size": len(b), "oid": _git_oid(b)}
                        for f, b in repo["files"].items()]
            else:
                return _send(h, 404, b"{}", {}, head)
            return _send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get("/".join(parts[:2]))
            if repo is None:
                return _send(h, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, head)
            if parts[3] not in ("main", repo["sha"]):
                return _send(h, 404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound"}, head)
            data = repo["files"].get("/".join(parts[4:]))
            if data is None:
                return _send(h, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, head)
            return _send(h, 200, data, {"ETag": f'"{_git_oid(data)}"', "X-Repo-Commit": repo["sha"],
                                        "Content-Type": "application/octet-stream"}, head)
        _send(h, 404, b"not found", {}, head)

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
    h.send_response(code)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if not head:
        h.wfile.write(body)
