"""Reader leases: how a reader replica tells the writer which snapshot it serves, so that the
writer keeps that snapshot's folder (and so its segments) until the reader moves on.

    NAME/leases/<reader id>.json    {"snapshot": "snap-…", "expires_at": unix seconds}

A reader writes its lease when it starts serving a snapshot and renews it while it serves it;
it removes it when it stops. The writer keeps every snapshot an unexpired lease names and
removes expired leases: a reader killed without notice pins nothing once its lease expires.
A reader that cannot write its lease (a read-only mount) still serves; it is then protected
only by holding its files open, which keeps their data on a local file system.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..atomic import atomic_write_bytes

LEASES = "leases"


def reader_id() -> str:
    """This process's name in lease files: host and pid, and a token against pid reuse."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


def write_lease(root: Path, reader: str, snapshot: str, ttl_s: float) -> None:
    atomic_write_bytes(root / LEASES / f"{reader}.json", json.dumps(
        {"snapshot": snapshot, "expires_at": time.time() + ttl_s}).encode())


def drop_lease(root: Path, reader: str) -> None:
    (root / LEASES / f"{reader}.json").unlink(missing_ok=True)


def leased_snapshots(root: Path, remove_expired: bool = True) -> set[str]:
    """Snapshots that unexpired leases name; expired leases are removed (by the writer)."""
    folder, now, named = root / LEASES, time.time(), set()
    if not folder.is_dir():
        return named
    for p in folder.glob("*.json"):
        try:
            lease = json.loads(p.read_bytes())
            expires, snapshot = float(lease["expires_at"]), str(lease["snapshot"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not a lease: not one to honour or remove
        if expires > now:
            named.add(snapshot)
        elif remove_expired:
            p.unlink(missing_ok=True)
    return named
