"""``serve``: the gRPC service."""
from __future__ import annotations

import argparse

from ..service.config import LIMITS, ROLES, ServeConfig  # a light module: no torch, no grpc
from .common import EXIT_OK, TOKEN_ENV, command, port, token


def cmd_serve(args: argparse.Namespace) -> int:
    from ..service.config import ServeConfig
    from ..service.listen import check_listen_addresses
    from ..service.logs import setup_json_logging

    setup_json_logging()
    config = ServeConfig.load(args.config, port=args.port, host=args.host, data_dir=args.data_dir,
                              default_backbone=args.backbone, metrics_port=args.metrics_port,
                              http_port=args.http_port, role=args.role, auth_token=token())
    check_listen_addresses(config)  # a bad config or a taken port is said before torch loads
    from ..service.grpc_server import Server

    server = Server(config).start()
    metrics = f", metrics on :{server.metrics_port}/metrics" if server.metrics_port else ""
    if server.http_port:
        metrics += f", HTTP API and page on :{server.http_port}"
    role = "" if config.role == "single" else f", {config.role}"
    print(f"embedsvc serving on {config.host}:{server.port} (data dir {config.data_dir}{role}"
          f"{metrics})", flush=True)
    server.serve_until_signal()
    return EXIT_OK


def limits_help() -> str:
    """Every limit on what clients may do, with its default (set any in serve.toml)."""
    defaults = ServeConfig()
    width = max(map(len, LIMITS))
    lines = [f"  {name:<{width}} = {getattr(defaults, name)!r:<9} {what}"
             for name, what in LIMITS.items()]
    return "limits on clients (serve.toml; beyond one the answer comes at once):\n" + \
        "\n".join(lines)


def register(sub) -> None:
    p = command(sub, "serve", "run the service: gRPC, and HTTP/JSON with a web page",
                ["embedsvc serve --port 50051 --data-dir /srv/embedsvc",
                 "embedsvc serve --data-dir /srv/embedsvc --http-port 8080   # then open "
                 "http://127.0.0.1:8080/",
                 "embedsvc serve --data-dir /shared/embedsvc --role reader --port 50052",
                 "embedsvc serve --config serve.toml --metrics-port 9100",
                 f"{TOKEN_ENV}=s3cret embedsvc serve --host 0.0.0.0"], cmd_serve,
                description=f"Run the gRPC service, and with --http-port the HTTP/JSON API "
                            f"(OpenAI-style /v1/embeddings, /openapi.json) and a web page on the "
                            f"same core. Clients must send 'authorization: Bearer TOKEN' "
                            f"when {TOKEN_ENV} is set. Flags override the --config file; SIGTERM "
                            f"drains in-flight requests and stops.")
    p.epilog += "\n\n" + limits_help()
    p.add_argument("--config", help="serve.toml with ServeConfig fields (see README)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, help="port in 1..65535, 0 = any free one (default 50051)")
    p.add_argument("--data-dir", help="folder with heads/, indexes/ and backbones/")
    p.add_argument("--backbone", help="default backbone, loaded at start")
    p.add_argument("--metrics-port", type=port, help="serve Prometheus metrics on this HTTP port")
    p.add_argument("--http-port", type=port,
                   help="also serve the HTTP/JSON API and the web page on this port")
    p.add_argument("--role", choices=ROLES,
                   help="single (default): owns the data dir; writer: also publishes snapshots "
                        "for readers; reader: a read-only replica of a writer's data dir")
