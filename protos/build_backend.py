"""PEP 517 build backend: setuptools, after generating the gRPC Python stubs from protos/.

Stubs are build products (never committed or edited by hand): every wheel and every editable
install regenerates ``embedsvc/v1/embedsvc_pb2.py`` and ``embedsvc_pb2_grpc.py`` from
``protos/embedsvc/v1/*.proto`` with grpcio-tools, which pyproject.toml lists as a build
requirement.
"""
from __future__ import annotations

from pathlib import Path

from setuptools import build_meta as _setuptools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate_stubs() -> list[Path]:
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")  # google/protobuf/*.proto
    for proto in protos:
        rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                          f"--python_out={ROOT}", f"--grpc_python_out={ROOT}", str(proto)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {rc})")
    return protos


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    generate_stubs()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    generate_stubs()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return _setuptools.build_sdist(sdist_directory, config_settings)


get_requires_for_build_wheel = _setuptools.get_requires_for_build_wheel
get_requires_for_build_editable = _setuptools.get_requires_for_build_editable
get_requires_for_build_sdist = _setuptools.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _setuptools.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
