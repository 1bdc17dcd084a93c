"""Issue 10's command-line findings, each through the CLI: its exit code and its stderr. ``serve``
and the import check run as a user runs them, in a fresh process (``run_cli``); the others call
the same ``main`` in this one (``cli``). Stores use the tiny test backbone."""
from __future__ import annotations

import json
import shutil
import socket

import pytest

from conftest import TINY, run_cli, run_importtime, write_manifest
from embedsvc.cli import build_parser


def one_error_line(proc, rc: int, *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == rc, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and "error" in lines[0], proc.stderr[-3000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def store_copy(tiny_store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(tiny_store.root, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# -- usage errors: exit 2 and one line, whatever the flag ------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["index", "build", "S", "--recall", "1.5"], "--recall"),
    (["interpolate", "R", "--alpha", "1.5"], "--alpha"),
    (["classify", "x.png", "--head", "h", "--abstain-below", "1.5"], "--abstain-below"),
    (["finetune", "d", "--out", "o", "--lr", "-1"], "--lr"),
    (["finetune", "d", "--out", "o", "--image-size", "16"], "image_size"),
    (["finetune", "d", "--resume", "r"], "--resume"),
    (["client", "embed", "x.png", "--timeout", "-1"], "--timeout"),
    (["client", "delete", "--index", "c", "-3"], "ID"),
    (["serve", "--port", "70000"], "70000"),
    (["serve", "--port", "-5"], "-5"),
    (["embed", "x.png", "--device", "gpu"], "gpu"),
    (["embed-dataset", "d", "--out", "o", "--workers", "-1"], "--workers"),
    (["index", "build", "S", "--memory-budget", "lots"], "lots"),
])
def test_bad_values_are_usage_errors(cli, argv, needle):
    one_error_line(cli(*argv), 2, needle)


def test_every_command_has_an_example_and_every_flag_help(cli):
    import argparse

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + [name])
            elif not action.help and action.dest != "help":
                missing.append(f"{' '.join(path)} {action.dest}: no help")
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions) \
                and "examples:" not in (parser.epilog or ""):
            missing.append(f"{' '.join(path)}: no example")

    walk(build_parser(), [])
    assert not missing, missing
    assert "EMBEDSVC_TOKEN" in cli("--help").stdout
    assert "EMBEDSVC_TOKEN" in cli("client", "embed", "--help").stdout


# -- serve: a taken port, a bad host, a taken metrics port, a bad config: one line each ----------------
def test_serve_refuses_what_it_cannot_listen_on(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = ["serve", "--data-dir", tmp_path, "--backbone", TINY]
        one_error_line(run_cli(*base, "--port", port), 1, str(port), "in use")
        one_error_line(run_cli(*base, "--port", 0, "--metrics-port", port), 1, str(port))
    one_error_line(run_cli(*base, "--host", "no-such-host.invalid", "--port", 0), 1, "no-such-host.invalid")


@pytest.mark.parametrize("text, needle", [
    ("port = 0\n[batching]\nmax_batch = 4\n", "max_batch"),
    ('port = "abc"\n', "port"),
    ("port = \n", "TOML"),
    ("port = 0\n[batching]\nmax_batch_size = -1\n", "max_batch_size"),
])
def test_serve_config_errors_are_one_line(tmp_path, text, needle):
    cfg = tmp_path / "serve.toml"
    cfg.write_text(text + ("" if "port" in text else "port = 0\n"))
    one_error_line(run_cli("serve", "--config", cfg, "--data-dir", tmp_path, timeout=60), 1, needle)


def run_without_torch(*args) -> str:
    """Run a command that must fail before it imports torch; its one error line."""
    ran, modules = run_importtime(*args)
    assert ran.returncode == 1 and len(ran.stderr.splitlines()) == 1, ran.stderr[-3000:]
    assert "torch" not in modules
    return ran.stderr


@pytest.mark.parametrize("text,needle", [('port = "abc"\n', "port"),
                                        ('decode = "turbo"\n', "fast, exact"),
                                        ('[runtimes]\neffnet-lite0 = "tensorrt"\n', "onnx-int8"),
                                        ('role = "leader"\n', "single, writer, reader"),
                                        ('tls_cert = "a.pem"\n', "tls_key"),
                                        ("metrics_port = 70000\n", "metrics_port")])
def test_serve_says_a_bad_config_before_loading_torch(tmp_path, text, needle):
    (tmp_path / "serve.toml").write_text(text)
    assert needle in run_without_torch("serve", "--config", tmp_path / "serve.toml")


# -- inputs ----------------------------------------------------------------------------------------
def test_missing_image_is_reported_before_any_model_loads(tmp_path):
    assert "missing.png" in run_without_torch("embed", tmp_path / "missing.png")


def test_a_weights_file_that_is_not_a_checkpoint(cli, photos, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights\n")
    one_error_line(cli("embed", photos["chelsea"], "--weights", notes), 1, "notes.txt", "does not fit")


# -- heads ----------------------------------------------------------------------------------------
def test_train_head_on_a_class_with_one_example(cli, fmnist_dir, tmp_path):
    files = sorted((fmnist_dir / "train" / "bag").glob("*.png"))[:6] + \
        sorted((fmnist_dir / "train" / "coat").glob("*.png"))[:1]
    manifest = write_manifest(tmp_path / "m.csv", [(p, p.parent.name, None) for p in files])
    assert cli("embed-dataset", manifest, "--out", tmp_path / "s", "--backbone", TINY,
               "--quiet").returncode == 0
    one_error_line(cli("train-head", tmp_path / "s", "--out", tmp_path / "h", "--quiet"), 1, "coat")
    # and the same store is too small for an ivfpq index: said, not a traceback
    one_error_line(cli("index", "build", tmp_path / "s", "--kind", "ivfpq"), 1, "ivfpq", "7")


def test_train_head_split_shots_and_overwrite(cli, store_copy, tmp_path):
    out = tmp_path / "head"
    one_error_line(cli("train-head", store_copy, "--out", out, "--eval-split", "val", "--quiet"),
                   1, "'val'", "test, train")
    proc = cli("train-head", store_copy, "--out", out, "--shots", "1000", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "warning: --shots 1000" in proc.stderr and "using all" in proc.stderr
    one_error_line(cli("train-head", store_copy, "--out", out, "--quiet"), 1, "--overwrite")
    assert cli("train-head", store_copy, "--out", out, "--overwrite", "--quiet").returncode == 0


# -- indexes and search ------------------------------------------------------------------------------
def test_recall_target_missed_is_said_and_faiss_is_quiet(cli, store_copy):
    proc = cli("index", "build", store_copy, "--kind", "ivfpq", "--recall", "1.0")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING clustering" not in proc.stderr
    assert "below the target 1" in proc.stderr


def test_search_sees_rows_added_after_the_index(cli, store_copy, fmnist_dir, tmp_path):
    assert cli("index", "build", store_copy).returncode == 0
    new = sorted((fmnist_dir / "test" / "bag").glob("*.png"))[-3:]
    manifest = write_manifest(tmp_path / "more.csv", [(p, "bag", "extra") for p in new])
    assert cli("embed-dataset", manifest, "--out", store_copy, "--backbone", TINY,
               "--quiet").returncode == 0
    proc = cli("search", store_copy, "--id", 401, "-k", 3, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["id"] == 401
    assert "last 3 rows" in proc.stderr and "index update" in proc.stderr


def test_advise_refuses_a_store(cli, tiny_store):
    one_error_line(cli("advise", tiny_store.root, "--quiet"), 1, "embedding store")


def test_fetch_with_a_smaller_limit_leaves_no_old_files(cli, tmp_path):
    assert cli("datasets", "fetch", "digits", "--out", tmp_path, "--limit", 30, "--quiet").returncode == 0
    assert cli("datasets", "fetch", "digits", "--out", tmp_path, "--limit", 10, "--quiet").returncode == 0
    assert len(list(tmp_path.rglob("*.png"))) == 20  # 10 train + 10 test
