"""The write-ahead log: appended records survive a reopen; a torn or corrupt tail is cut; a write
refused by a full disk leaves the file as it was."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from embedsvc.errors import IncompatibleError
from embedsvc.index.wal import HEADER, RECORD, WriteAheadLog


def test_records_survive_a_reopen_with_their_numbers(tmp_path):
    path = tmp_path / "wal.log"
    log, records = WriteAheadLog.open(path, first_seq=41)
    assert records == []
    assert [log.append(p) for p in (b"a", b"", b"c" * 1000)] == [41, 42, 43]
    log.close()
    log, records = WriteAheadLog.open(path)
    assert records == [(41, b"a"), (42, b""), (43, b"c" * 1000)] and log.next_seq == 44
    log.close()


@pytest.mark.parametrize("damage", ["torn", "corrupt"])
def test_a_damaged_tail_is_cut_and_appends_go_on(tmp_path, damage):
    path = tmp_path / "wal.log"
    with WriteAheadLog.open(path)[0] as log:
        for p in (b"one", b"two", b"three"):
            log.append(p)
    data = bytearray(path.read_bytes())
    if damage == "torn":  # a crash in the middle of the last append
        data = data[:-2]
    else:  # a flipped byte in the second record's payload
        data[HEADER.size + RECORD.size + 3 + RECORD.size] ^= 0xFF
    path.write_bytes(bytes(data))
    log, records = WriteAheadLog.open(path)
    kept = [b"one", b"two"] if damage == "torn" else [b"one"]
    assert [p for _, p in records] == kept
    assert path.stat().st_size == log.size  # the tail is gone from disk too
    assert log.append(b"next") == len(kept) + 1
    log.close()
    assert [p for _, p in WriteAheadLog.open(path)[1]] == kept + [b"next"]


def test_a_file_that_is_not_a_log_is_refused(tmp_path):
    (tmp_path / "x.log").write_bytes(b"hello, world, not a log")
    with pytest.raises(IncompatibleError, match="not an embedsvc write-ahead log"):
        WriteAheadLog.open(tmp_path / "x.log")


FULL_DISK = """
import json, resource, signal, sys
from embedsvc.errors import ResourceExhaustedError
from embedsvc.index.wal import WriteAheadLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as the server does
log, _ = WriteAheadLog.open(sys.argv[1])
log.append(b"kept" * 100)
resource.setrlimit(resource.RLIMIT_FSIZE, (log.size + 1000, log.size + 1000))
try:
    log.append(b"x" * 5000)
    print(json.dumps({"refused": None}))
except ResourceExhaustedError as exc:
    print(json.dumps({"refused": str(exc), "size": log.size}))
"""


def test_a_full_disk_refuses_the_write_and_leaves_no_trace(tmp_path):
    path = tmp_path / "wal.log"
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["refused"] and "full" in result["refused"]
    assert path.stat().st_size == result["size"]
    assert [p for _, p in WriteAheadLog.open(path)[1]] == [b"kept" * 100]
