"""Shared fixtures: real photos (shipped inside scikit-image) and the real default backbone."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

REPORTED_VERSIONS = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "faiss-cpu",
                     "pillow", "grpcio", "protobuf", "fastapi", "uvicorn", "onnxruntime",
                     "openvino")


def pytest_report_header(config) -> str:
    """The versions this run tested (constraints.txt pins them for a fresh install)."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    return "versions: " + ", ".join(f"{d} {version(d)}" for d in REPORTED_VERSIONS)


PHOTO_NAMES = {"chelsea": "chelsea", "coffee": "coffee", "astronaut": "astronaut",
               "camera": "camera", "rocket": "rocket"}


@pytest.fixture(scope="session")
def photo_images() -> dict[str, Image.Image]:
    import skimage.data

    return {name: Image.fromarray(getattr(skimage.data, attr)())
            for name, attr in PHOTO_NAMES.items()}


@pytest.fixture(scope="session")
def photos(photo_images, tmp_path_factory) -> dict[str, Path]:
    """The photos as PNG files on disk."""
    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, img in photo_images.items():
        paths[name] = out / f"{name}.png"
        img.save(paths[name])
    return paths


@pytest.fixture(scope="session")
def lite0():
    from embedsvc.backbones import create_backbone

    return create_backbone("effnet-lite0")


class NetworkAccess(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to open a network connection or resolve a name fail loudly."""

    def refuse(*args, **kwargs):
        raise NetworkAccess(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


# -- real datasets ----------------------------------------------------------------------------
FMNIST_LIMIT = 4000  # images per split written to disk (advise counts 300 per class of them)
# the real-weight store: enough for heads trained on 60 per class and for FAISS's IVF training,
# and embedded in about half a minute on 2 cores
FMNIST_STORE_PER_CLASS, FMNIST_TEST = 200, 500
FMNIST_STORE_COUNT = 10 * FMNIST_STORE_PER_CLASS + FMNIST_TEST


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> Path:
    """The first 4,000 Fashion-MNIST training and 4,000 test images as PNG class folders,
    written from Debian's dataset-fashion-mnist (installed by .ci/run)."""
    from embedsvc.datasets.fetch import fetch_dataset

    out = tmp_path_factory.mktemp("fmnist")
    fetch_dataset("fashion-mnist", out, limit=FMNIST_LIMIT)
    return out


@pytest.fixture(scope="session")
def fmnist_store(fmnist_dir, tmp_path_factory):
    """A store of 2,000 train (200 per class) + 500 test images, picked by a manifest, embedded once
    with the real effnet-lite0."""
    from embedsvc.store import EmbedDatasetConfig, EmbeddingStore, embed_dataset

    test_files = sorted((fmnist_dir / "test").rglob("*.png"), key=lambda p: p.name)[:FMNIST_TEST]
    manifest = tmp_path_factory.mktemp("manifest") / "fmnist.csv"
    lines = ["path,label,split"]
    lines += [f"{p},{p.parent.name},train" for cls in sorted((fmnist_dir / "train").iterdir())
              for p in sorted(cls.glob("*.png"))[:FMNIST_STORE_PER_CLASS]]
    lines += [f"{p},{p.parent.name},test" for p in test_files]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("stores") / "fmnist"
    embed_dataset(manifest, out, EmbedDatasetConfig(shard_size=1024), progress=False)
    return EmbeddingStore.open(out)


# -- the tiny test backbone: stores, heads, indexes and the service without the real model -----------
TINY = "tiny-random"


def write_manifest(path: Path, rows: list[tuple[Path, str, str | None]]) -> Path:
    lines = ["path,label,split"] + [f"{p},{label},{split or ''}" for p, label, split in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_store(fmnist_dir, tmp_path_factory):
    """300 train + 100 test Fashion-MNIST images embedded with ``tiny-random``: a real store in
    seconds, for tests about stores, indexes, heads and commands rather than about accuracy."""
    from embedsvc.store import EmbedDatasetConfig, EmbeddingStore, embed_dataset

    rows = [(p, p.parent.name, split) for split, n in (("train", 300), ("test", 100))
            for p in sorted((fmnist_dir / split).rglob("*.png"), key=lambda p: p.name)[:n]]
    manifest = write_manifest(tmp_path_factory.mktemp("tiny") / "tiny.csv", rows)
    out = tmp_path_factory.mktemp("stores") / "tiny"
    embed_dataset(manifest, out, EmbedDatasetConfig(backbone=TINY, shard_size=128), progress=False)
    return EmbeddingStore.open(out)


# -- the command line ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ran:
    """What a command did: its exit code and what it printed (like subprocess.CompletedProcess)."""
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m embedsvc ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "embedsvc", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def kill_embed_dataset(src, out: Path, *args) -> None:
    """``embed-dataset SRC --out OUT ARGS`` in a fresh process, SIGKILLed once its manifest has
    committed two shards."""
    import json
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "embedsvc", "embed-dataset", str(src), "--out",
                             str(out), *map(str, args), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        mf = out / "manifest.json"
        if mf.is_file() and len(json.loads(mf.read_text())["shards"]) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def kill_and_resume_run(data, args: list[str], run: Path) -> subprocess.CompletedProcess:
    """``finetune DATA ARGS --out RUN`` in a fresh process, SIGKILLed as soon as its first
    epoch's checkpoint is on disk, then ``finetune --resume RUN``: the resumption's outcome."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "embedsvc", "finetune", str(data), *args,
                             "--out", str(run), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((run / "checkpoints").glob("epoch_*.pt")) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (run / "finetuned.json").exists()  # it really was interrupted
    resumed = run_cli("finetune", "--resume", run, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    return resumed


def assert_same_run_weights(a: Path, b: Path) -> None:
    """Two finished runs hold bitwise the same encoder and classifier weights."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    wa, wb = (load_file(str(p / "model.safetensors")) for p in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ha, hb = (np.load(p / "head" / "params.npz") for p in (a, b))
    assert np.array_equal(ha["coef"], hb["coef"]) and np.array_equal(ha["intercept"], hb["intercept"])


def run_importtime(*args) -> tuple[Ran, set[str]]:
    """``python -X importtime -m embedsvc ARGS``: what it did (its stderr without the import
    lines) and the modules it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "embedsvc", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    lines = proc.stderr.splitlines(keepends=True)
    timings = [l for l in lines if l.startswith("import time:")]
    said = "".join(l for l in lines if not l.startswith("import time:"))
    return Ran(proc.returncode, proc.stdout, said), {l.rsplit("|", 1)[-1].strip() for l in timings}


@pytest.fixture
def cli(capfd):
    """``embedsvc ARGS`` through ``embedsvc.cli.main`` in this process, its file descriptors 1 and 2
    captured (FAISS and other C code print there too). The same code path as ``python -m
    embedsvc`` less the 3-6 s a fresh process spends importing torch, timm and scikit-learn;
    what only a process shows (the entry point, signals, imports, a fresh interpreter) is tested
    with ``run_cli``."""
    from embedsvc.cli import main

    def run(*args) -> Ran:
        capfd.readouterr()  # what came before is not this command's
        said = ""
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version and usage errors
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            said = "" if isinstance(exc.code, int | None) else f"{exc.code}\n"  # as Python prints it
        out, err = capfd.readouterr()
        return Ran(code, out, err + said)

    return run


def wait_for(condition, timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll ``condition`` (an event a test waits for, never a fixed sleep) until it holds."""
    import time

    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.01)
