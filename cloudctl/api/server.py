"""Serving the API with gunicorn, a production WSGI server (pre-forked workers, threads, TLS).

The application is built once, in the master, from the cloud's Settings; the workers fork from
it. SIGTERM (or SIGINT) stops the master and its workers gracefully: requests in flight finish
within `graceful_timeout`. With the state in etcd (a CLC pair), each worker process also runs
the takeover worker (cloudctl/api/takeover.py) in a thread: one of them, on one CLC, is elected.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication

from cloudctl.api.app import Api
from cloudctl.api.takeover import Takeover, reconcile_settler
from cloudctl.state import EtcdStore

DEFAULT_BIND = "127.0.0.1:8773"  # Eucalyptus's port for its EC2 API


@dataclass(frozen=True)
class ServeOptions:
    bind: str = DEFAULT_BIND
    workers: int = 2
    threads: int = 4
    certfile: str | None = None
    keyfile: str | None = None
    graceful_timeout: int = 10


class ApiServer(BaseApplication):
    """gunicorn, configured from ServeOptions instead of its command line."""

    def __init__(self, app: Api, options: ServeOptions) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        settings: dict[str, Any] = {
            "bind": [self.options.bind],
            "workers": self.options.workers,
            "threads": self.options.threads,  # more than 1: the gthread worker
            "worker_class": "gthread" if self.options.threads > 1 else "sync",
            "graceful_timeout": self.options.graceful_timeout,
            "proc_name": "cloudctl-api",
            "errorlog": "-",
            "loglevel": "info",
            # The application logs one line per request itself (cloudctl.api).
            "accesslog": None,
            # gunicorn's runtime control socket ($HOME/.gunicorn/gunicorn.ctl): not used, and
            # two services on one host would share its path.
            "control_socket_disable": True,
            "limit_request_line": 8190,  # long presigned GET URLs
        }
        if isinstance(self.application.store, EtcdStore):
            settings |= {"post_worker_init": self._start_takeover, "worker_exit": _stop_takeover}
        if self.options.certfile:
            settings |= {"certfile": self.options.certfile, "keyfile": self.options.keyfile}
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Api:
        return self.application

    def _start_takeover(self, worker: Any) -> None:
        """In each worker process, after the fork (a thread does not survive one)."""
        app = self.application
        worker.takeover = Takeover(EtcdStore(app.store.config), reconcile_settler(app.settings))
        threading.Thread(target=worker.takeover.run, daemon=True, name="takeover").start()


def _stop_takeover(server: Any, worker: Any) -> None:
    if hasattr(worker, "takeover"):
        worker.takeover.stop()


def serve(app: Api, options: ServeOptions) -> None:
    """Run the service in the foreground until SIGTERM/SIGINT."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(name)s %(message)s"))
    api_log = logging.getLogger("cloudctl.api")
    api_log.addHandler(handler)
    api_log.setLevel(logging.INFO)
    api_log.propagate = False
    ApiServer(app, options).run()
