"""``embedsvc serve`` in a process of its own, started quickly: for tests that kill, stop and
restart servers (collection durability, replicas)."""
from __future__ import annotations

import multiprocessing
import os
import re
import resource
import signal
import sys
import time
from pathlib import Path

from conftest import TINY


# Each start of `python -m embedsvc serve` spends 5-6 s of a 2-core machine importing torch, timm
# and grpc: the durability tests restart twenty-odd servers. So these servers are forked from a
# process that has imported those once (multiprocessing's forkserver): each is still a process
# of its own running `embedsvc serve` (embedsvc.cli.main) on its own port, and SIGKILL ends it as
# it ends the real one. Other tests start `python -m embedsvc serve` itself.
FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(["embedsvc.cli", "embedsvc.service.grpc_server", "timm", __name__])


def _serve_forked(argv: list[str], log: str, fsize_limit: int | None) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if fsize_limit is not None:
        sys.dont_write_bytecode = True  # no .pyc may meet the limit before the server ignores SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
    from embedsvc.cli import main

    sys.exit(main(argv))


class ServerProcess:
    """``embedsvc serve`` in a process of its own (forked, see above): its address, its stderr
    and stdout (one log file), how it ended."""

    def __init__(self, data: Path, tmp: Path, config: str, fsize_limit: int | None = None):
        stem = tmp / f"serve-{time.monotonic_ns()}"
        self.log, toml = stem.with_suffix(".log"), stem.with_suffix(".toml")
        toml.write_text(config)
        argv = ["serve", "--port", "0", "--data-dir", str(data), "--backbone", TINY,
                "--config", str(toml)]
        self.proc = FORKS.Process(target=_serve_forked, args=(argv, str(self.log), fsize_limit),
                                  daemon=True)  # a failed test leaves no server behind
        self.proc.start()
        deadline = time.monotonic() + 120
        while not (said := [l for l in self.lines() if l.startswith("embedsvc serving on")]):
            assert self.proc.is_alive() and time.monotonic() < deadline, self.lines()[-20:]
            time.sleep(0.02)
        self.target = said[0].split(" on ")[1].split()[0]
        metrics = re.search(r"metrics on :(\d+)/", said[0])
        self.metrics_port = int(metrics.group(1)) if metrics else None

    def send(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        self.proc.join(timeout)
        return self.proc.exitcode

    def kill(self) -> None:
        self.send(signal.SIGKILL)
        self.wait(30)

    def stop(self) -> None:
        self.send(signal.SIGTERM)
        assert self.wait(60) == 0, "".join(self.lines()[-20:])

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines(keepends=True) if self.log.is_file() else []

    def errors(self) -> list[str]:
        """Lines that show a failure (an abort, a traceback), once it has exited."""
        self.wait(60)
        return [line for line in self.lines() if "epoll" in line or "Traceback" in line
                or '"level": "error"' in line]
