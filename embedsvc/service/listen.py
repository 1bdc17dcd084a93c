"""Check a listening address before a server takes it, so the error names the port and why.

gRPC's own bind failure says only "failed to bind"; and by default it sets SO_REUSEPORT, which
lets a second server share a taken port (the server turns that off too).
"""
from __future__ import annotations

import errno
import resource
import socket

from ..errors import InvalidInputError


def check_listen_address(host: str, port: int, what: str = "port") -> None:
    if port != 0:
        bind(host, port, what).close()
    else:
        _address(host, port)  # the host must resolve all the same


def _address(host: str, port: int):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(f"cannot listen on {host!r}: the host name does not resolve "
                                f"({exc})") from None
    return infos[0][0], infos[0][4]


def bind(host: str, port: int, what: str = "port") -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), or one error naming why not."""
    family, address = _address(host, port)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(address)
        return s
    except OSError as exc:
        s.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInputError(f"{what} {port} on {host} is in use by another "
                                    f"process") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidInputError(f"cannot listen on {host}:{port}: {host} is not an "
                                    f"address of this machine") from None
        if exc.errno == errno.EACCES:
            raise InvalidInputError(f"{what} {port} needs privileges this process does "
                                    f"not have") from None
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def check_listen_addresses(config) -> None:
    """The gRPC port and, when they are set, the metrics and HTTP ports of a ``ServeConfig``."""
    check_listen_address(config.host, config.port, "port")
    for name in ("metrics_port", "http_port"):
        if getattr(config, name) is not None:
            check_listen_address(config.host, getattr(config, name), name)


# file descriptors kept for what is not a client's connection: stores, indexes, logs, models
FILES_RESERVE = 512


def ensure_fd_limit(needed: int, what: str) -> None:
    """Raise the soft open-file limit towards the hard one so ``needed`` descriptors fit; one
    error naming ``what`` when the hard limit is lower (a cap that cannot hold would let
    connections use up the descriptors that health checks and files need)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise InvalidInputError(f"{what} needs {needed} open files, and this process may "
                                    f"open {hard} at most (ulimit -n); lower {what} or raise "
                                    f"the limit")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
