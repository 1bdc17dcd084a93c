"""The layout rules of the design, checked on the source: no import cycle (function-level imports
included), grpc only in the service and the client, small modules, and a command line whose
parser imports no torch."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import run_importtime

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedsvc", "classifiers")
MAX_LINES = 400
GENERATED = ("embedsvc/v1/",)  # protoc output


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(GENERATED):
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import a.b.c` of a function → its module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_grpc_only_in_service_and_client():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("embedsvc.service") or name == "embedsvc.client":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "grpc" or m.startswith("grpc.") or m.startswith("grpc_") for m in mods):
                offenders.append(name)
    assert not offenders, f"grpc imported outside the service and client: {offenders}"


def test_no_module_over_the_size_limit():
    big = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    big = {n: lines for n, lines in big.items() if lines > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def _imported_by(*argv: str) -> set[str]:
    ran, modules = run_importtime(*argv)
    assert ran.returncode == 0, ran.stderr[-2000:]
    return modules


def test_help_and_client_help_import_no_heavy_library():
    for argv in (("--help",), ("client", "--help"), ("client", "embed", "--help"),
                 ("train-head", "--help"), ("finetune", "--help"), ("index", "build", "--help")):
        loaded = _imported_by(*argv)
        heavy = loaded & {"torch", "sklearn", "faiss", "timm", "grpc", "PIL"}
        assert not heavy, f"`embedsvc {' '.join(argv)}` imports {sorted(heavy)}"


# Image-only code, until one image package holds it (issue 30); text code lives in embedsvc.text.
IMAGE_ONLY = ("embedsvc.backbones", "embedsvc.images", "embedsvc.preprocess", "embedsvc.decode_ahead",
              "embedsvc.extract", "embedsvc.traced", "embedsvc.query", "embedsvc.datasets.photos",
              "embedsvc.datasets.shifts")
TEXT_ONLY = ("embedsvc.text",)
# what sees every modality through encoders.py's one interface and imports none of their code
# (store.ray_engine runs both through the encoders' dataset_reader / embed_read)
MODALITY_FREE = ("embedsvc.service.batcher", "embedsvc.service.core", "embedsvc.store.store",
                 "embedsvc.store.embed_job", "embedsvc.store.shard_files", "embedsvc.store.ray_engine",
                 "embedsvc.index", "embedsvc.collection", "classifiers.heads.ood",
                 "classifiers.heads.artifact", "classifiers.adapt.gap", "embedsvc.provenance",
                 "embedsvc.embeddings")


def test_text_and_image_code_do_not_import_each_other():
    modules = _modules()

    def within(name: str, prefixes) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    crossings = []
    for name, path in modules.items():
        imported = _imports(name, path, modules)
        if within(name, TEXT_ONLY):
            crossings += [f"{name} -> {m}" for m in imported if within(m, IMAGE_ONLY)]
        elif within(name, IMAGE_ONLY):
            crossings += [f"{name} -> {m}" for m in imported if within(m, TEXT_ONLY)]
    assert not crossings, "\n".join(crossings)


def test_the_batcher_core_stores_indexes_and_heads_import_no_modality():
    """Everything after the vector, and the service's batcher and core, see encoders only
    through embedsvc.encoders: a third modality would change none of them."""
    modules = _modules()

    def within(name: str, prefixes) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    found = [f"{name} -> {m}" for name, path in modules.items() if within(name, MODALITY_FREE)
             for m in _imports(name, path, modules) if within(m, IMAGE_ONLY + TEXT_ONLY)]
    assert not found, "\n".join(found)
