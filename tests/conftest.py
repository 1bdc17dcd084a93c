"""Shared fixtures: real photos (shipped inside scikit-image) and the real default backbone."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from PIL import Image

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
