"""Running the app: bind the socket, load the model, hand both to uvicorn (one process or N workers).

    serve(ServeConfig("runs/demo", port=8000))     # blocks until Ctrl-C / SIGTERM; returns 0

The socket is bound here, before uvicorn starts, so ``--port 0`` works (the OS picks a free port)
and the line printed at start names the real address. With ``--workers N`` ``uvicorn.run`` starts
N processes sharing the port (the one found here: with ``--port 0`` it is released and rebound by
uvicorn); each builds its app from the config in $VITKIT_SERVE_CONFIG (`app.create_app_from_env`)
with its own model, batcher and limits, and cores / N torch threads.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys

from .config import ENV, ServeConfig


def setup_threads(config: ServeConfig) -> int:
    """torch threads of one worker: --threads, else this machine's cores shared among the workers."""
    import torch

    from ..train.precision import available_cpus
    n = config.threads or max(1, available_cpus() // max(1, config.workers))
    torch.set_num_threads(n)
    return n


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port); port 0 lets the OS choose."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}"
                      + ("; the port is taken: choose another with --port (0 = any free one)"
                         if e.errno in (98, 48) else "")) from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(config: ServeConfig) -> int:
    import uvicorn

    from .app import create_app
    from .model import load_served
    logging.basicConfig(level=logging.WARNING, format="vitkit serve: %(levelname)s: %(message)s")
    threads = setup_threads(config)
    served = load_served(config.source, config.amp, config.onnx, config.weights, threads)  # fails fast, one line
    served.warm_up()
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    options = dict(log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                   limit_concurrency=4 * config.max_queue + 64, server_header=False)
    if not _is_loopback(config.host):
        print(f"vitkit: warning: listening on {config.host}, reachable from other machines; the API has no "
              "authentication", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"vitkit: serving {served.name} ({served.kind}, {served.precision}, input "
          f"{'x'.join(map(str, served.input_size))}) on http://{shown}:{port}/ with {config.workers} worker"
          f"{'s' if config.workers > 1 else ''} x {threads} threads, batches of up to {config.max_batch} within "
          f"{config.max_wait_ms:g} ms; Ctrl-C stops", flush=True)
    if config.workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(served, config), **options))
        server.run(sockets=[sock])
        return 0
    del served  # each worker loads its own
    sock.close()  # uvicorn's supervisor binds the port for its workers (the port is now known)
    import inspect
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.run).parameters:
        options["timeout_worker_healthcheck"] = 120  # a worker loading its model on a busy machine is not dead
    os.environ[ENV] = config.to_json()
    uvicorn.run("vitkit.serve.app:create_app_from_env", factory=True, host=config.host, port=port,
                workers=config.workers, **options)
    return 0
