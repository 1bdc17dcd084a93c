"""The HTTP API's listener: uvicorn on an event loop of its own thread, beside gRPC's, sharing
the core and its worker pool (one set of limits for both). The socket is bound here, first, so
a taken port is one clear error and port 0 is known at once."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import InvalidInputError
from .config import ServeConfig
from .core import EmbeddingCore
from .http_connections import ConnectionLimits, guarded_protocol
from .http_gate import Gate
from .listen import bind

log = logging.getLogger("embedsvc.server")


class HttpServer:
    def __init__(self, core: EmbeddingCore, pool: ThreadPoolExecutor, config: ServeConfig):
        import uvicorn

        from .http_app import create_app

        app = Gate(create_app(core, pool), core, config.auth_token, config.max_message_bytes,
                   config.max_items_per_request)
        self.socket = bind(config.host, config.http_port, "http_port")
        self.port = self.socket.getsockname()[1]
        tls = {"ssl_certfile": config.tls_cert, "ssl_keyfile": config.tls_key} \
            if config.tls_cert else {}
        protocol = guarded_protocol(
            ConnectionLimits(config.max_connections, config.max_header_bytes,
                             config.header_timeout_s, config.body_timeout_s),
            lambda reason: core.metrics.connections_refused.labels("http", reason).inc())
        # log_config None: the process's JSON logging stays; lifespan off: the core is
        # started and stopped by Server, not by the app
        self.server = uvicorn.Server(uvicorn.Config(
            app, http=protocol, log_config=None, access_log=False, lifespan="off",
            server_header=False, timeout_keep_alive=config.keepalive_timeout_s, **tls))
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._serve, name="http-loop", daemon=True)
        self._thread.start()
        until = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive() and time.monotonic() < until:
            time.sleep(0.01)
        if not self.server.started:
            raise InvalidInputError(f"the HTTP API did not start: {self._failed or 'timeout'}")
        log.info("HTTP API on port %d", self.port)

    def _serve(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.socket]))
        except BaseException as exc:  # noqa: BLE001 - start() reports it
            self._failed = exc

    def stop(self, grace: float) -> None:
        """Stop accepting, let requests in progress finish (up to ``grace`` s)."""
        self.server.config.timeout_graceful_shutdown = grace
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(grace + 5)
        self.socket.close()

