"""Peak memory per pixel of decode + preprocess, the server's path for one image, for strips
(1 x N, N x 1) and squares of the same pixel count; each case in a fresh process, its peak RSS
(VmHWM) against the process's own before the image. The row term in ``images.ROW_PIXELS``
comes from here: a 1-pixel-wide image costs about 30 bytes a pixel, 24 of them per row.

    .venv/bin/python bench/decode_memory.py [--pixels 8000000]

A strip at the server's limit (40,000,000 pixels, the 78 KB PNG an outside probe sent) is shown
as refused, with what its decode would have cost measured with the limit lifted.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile import strip_png  # noqa: E402 - the hand-built PNG the hardening tests send

MEASURE = """
import resource, sys
from embedsvc.backbones import create_backbone
from embedsvc.errors import ImageDecodeError
from embedsvc.extract import ExtractConfig, FeatureExtractor
path, limit = sys.argv[1], int(sys.argv[2])
data = open(path, "rb").read()
fe = FeatureExtractor(create_backbone("effnet-lite0"), ExtractConfig(device="cpu", max_pixels=limit))
fe.prepare(open(sys.argv[3], "rb").read(), "warm")  # the transform's own buffers, once
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap goes back, so new pages show as growth
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
except OSError:
    pass
before = hwm()
try:
    fe.prepare(data, "x")
    print(hwm() - before)
except ImageDecodeError as exc:
    print("refused:", str(exc).split(": ", 1)[1])
"""


def png(width: int, height: int, path: Path) -> Path:
    path.write_bytes(strip_png(width, height))
    return path


def measure(path: Path, limit: int, warm: Path) -> str:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(limit), str(warm)],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, default=8_000_000, help="pixels of each measured image")
    args = ap.parse_args()
    from embedsvc.images import ROW_PIXELS
    from embedsvc.service.config import SERVER_MAX_PIXELS

    n = args.pixels
    side = int(math.isqrt(n))
    with tempfile.TemporaryDirectory() as tmp:
        warm = png(64, 64, Path(tmp) / "warm.png")
        print(f"decode + preprocess (effnet-lite0, fast), peak RSS growth; rows cost "
              f"{ROW_PIXELS} pixels each of the budget")
        print(f"{'image':>16} {'file KB':>8} {'pixels':>11} {'peak MB':>8} {'B/pixel':>8}")
        for w, h in ((1, n), (n, 1), (side, side)):
            path = png(w, h, Path(tmp) / f"{w}x{h}.png")
            grew = int(measure(path, 1 << 40, warm))
            print(f"{f'{w}x{h}':>16} {path.stat().st_size / 1024:8.0f} {w * h:11d} "
                  f"{grew / 1e6:8.0f} {grew / (w * h):8.1f}")
        path = png(1, SERVER_MAX_PIXELS, Path(tmp) / "probe.png")
        print(f"1x{SERVER_MAX_PIXELS} ({path.stat().st_size} bytes) at the server's limit "
              f"({SERVER_MAX_PIXELS} pixels): {measure(path, SERVER_MAX_PIXELS, warm)}")
        grew = int(measure(path, 1 << 40, warm))
        print(f"  with no limit it would have cost {grew / 1e6:.0f} MB "
              f"({grew / SERVER_MAX_PIXELS:.1f} B/pixel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
