"""What every command shares: exit codes, the one-line error, argument types that reject bad
values at parse time (exit 2), and a parser factory that gives each command an example.

Nothing here imports torch, scikit-learn, FAISS or grpc: building the whole parser must stay
instant (``embedsvc --help``, every ``embedsvc client ...``).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TOKEN_ENV = "EMBEDSVC_TOKEN"
SERVER_ENV = "EMBEDSVC_SERVER"  # HOST:PORT every client command calls when --server is absent


def err(msg: str) -> None:
    print(f"embedsvc: error: {msg}", file=sys.stderr)


def warn(msg: str) -> None:
    print(f"embedsvc: warning: {msg}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse with one error line (plus where to look) and exit code 2. An unknown flag is
    named first, with the nearest known one: argparse itself would report a required option
    as missing (``--ot store`` for ``--out store``) and never mention the typo."""

    def error(self, message: str):  # noqa: D401  (argparse's hook)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in self._actions)
        if leaf and args is not None:  # a command's own arguments (its group passed them on)
            self._refuse_unknown_flags(list(args))
        return super().parse_known_args(args, namespace)

    def _refuse_unknown_flags(self, args: list[str]) -> None:
        import difflib

        known = list(self._option_string_actions)
        for token in args:
            if token == "--":
                return
            if not token.startswith("-") or token == "-" or _NUMBER.fullmatch(token):
                continue
            flag = token.split("=", 1)[0]
            if (flag in known or flag[:2] in known and not flag.startswith("--")  # -k5
                    or flag.startswith("--") and sum(k.startswith(flag) for k in known) == 1):
                continue
            near = difflib.get_close_matches(flag, [k for k in known if k.startswith("--")], 1)
            self.error(f"unknown option {flag}" + (f"; did you mean {near[0]}?" if near else ""))


_NUMBER = re.compile(r"-\d+(\.\d*)?|-\.\d+")  # a negative value, not a flag


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; a flag's help ends with its default, when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "%(default)" not in help):
            help += " (default: %(default)s)"
        return help


def command(sub, name: str, help: str, examples: Sequence[str], func: Callable | None = None,
            description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand with its help line, description and examples; ``func`` runs it."""
    p = sub.add_parser(name, help=help, description=description or help,
                       epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                       formatter_class=_Formatter)
    p.set_defaults(prog=p.prog)  # named in a usage error found after parsing
    if func is not None:
        p.set_defaults(func=func)
    return p


def group(sub, name: str, help: str, dest: str) -> argparse._SubParsersAction:
    p = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)
    return p.add_subparsers(dest=dest, required=True, metavar="ACTION", parser_class=Parser)


# -- argument types: a bad value is a usage error (exit 2) naming the value -------------------------
def _number(kind: type, text: str, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text, "a positive number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text, "a number >= 0")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def in_range(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """A float in [lo, hi], either end optionally open; its help names the interval."""
    shown = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        value = _number(float, text, f"a number in {shown}")
        below = value <= lo if lo_open else value < lo
        above = value >= hi if hi_open else value > hi
        if below or above or value != value:
            raise argparse.ArgumentTypeError(f"expected a number in {shown}, got {text}")
        return value

    parse.__name__ = f"number in {shown}"
    return parse


probability = in_range(0.0, 1.0)

MAX_OOD_HELP = ("answer 'unknown' when the out-of-distribution score exceeds S, in [0, 1]; a "
                "trained head's score is the fraction of held-out training examples that look "
                "more typical, so 0.99 abstains on ~1%% of in-distribution inputs")


def port(text: str) -> int:
    value = _number(int, text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535 (0: any free port), got {value}")
    return value


def decode_option(p: argparse.ArgumentParser) -> None:
    from ..backbones.config import DECODE_MODES, DEFAULT_DECODE

    p.add_argument("--decode", choices=DECODE_MODES, default=DEFAULT_DECODE,
                   help="fast: JPEGs decoded at the scale the model needs (default; embeddings "
                        "within cosine 0.995 of exact); exact: every pixel, timm's transform")


def runtime_option(p: argparse.ArgumentParser) -> None:
    from ..runtimes import DEFAULT_RUNTIME, RUNTIMES

    p.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                   help="torch (default); onnx / openvino: the same features from an exported "
                        "graph (CPU); onnx-int8 / openvino-int8: after 'embedsvc calibrate'")


def columns_options(p: argparse.ArgumentParser) -> None:
    """Which columns of a parquet file or ``datasets`` folder hold the inputs and labels."""
    g = p.add_argument_group("columns (parquet files and datasets folders; default: the usual names)")
    g.add_argument("--image-column", metavar="COL", help="image bytes (jpg, png, image, img, ...)")
    g.add_argument("--path-column", metavar="COL", help="image file paths (path, file_name, ...)")
    g.add_argument("--text-column", metavar="COL", help="texts (text, caption, sentence)")
    g.add_argument("--label-column", metavar="COL", help="labels (label, labels, cls, class)")


def columns_from(args: argparse.Namespace):
    from ..datasets import Columns

    return Columns(image=args.image_column, path=args.path_column, text=args.text_column,
                   label=args.label_column)


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N; checked here so a typo never waits for a model to load."""
    t = text.strip().lower()
    if t in ("auto", "cpu", "cuda") or (t.startswith("cuda:") and t[5:].isdigit()):
        return t
    raise argparse.ArgumentTypeError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")


def byte_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B")
    try:
        value = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 4G, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return value


# -- inputs checked before anything heavy loads -------------------------------------------------------
class InputError(Exception):
    """A bad input found by the command line itself: one line, exit 1."""


class UsageError(Exception):
    """A bad combination of flags or a setting the core's config refuses: one line, exit 2."""


@contextmanager
def settings_from_flags():
    """Build a config from flags: whatever its validation refuses is a usage error (exit 2)."""
    from ..errors import InvalidInputError

    try:
        yield
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from None


def existing_images(paths: Sequence[str], skip_bad: bool) -> list[str]:
    """The image paths that exist; a missing one is an error (or a warning with --skip-bad),
    found before a model spends seconds loading."""
    kept = []
    for p in paths:
        if os.path.isfile(p):
            kept.append(p)
        elif skip_bad:
            warn(f"skipped {p!r}: no such file")
        else:
            raise InputError(f"cannot read image {p!r}: no such file")
    if not kept:
        raise InputError("no image to work on")
    return kept


def text_options(p: argparse.ArgumentParser, what: str = "texts") -> None:
    """``--text TEXT`` (repeatable) and ``--texts FILE`` (one per line): the text twins of a
    command's image arguments."""
    p.add_argument("--text", action="append", metavar="TEXT", help=f"a text to {what} (repeat for more)")
    p.add_argument("--texts", metavar="FILE", help=f"a UTF-8 file of texts to {what}, one per line "
                                                   f"(blank lines skipped; '-' reads stdin)")


def read_texts_file(path: str) -> tuple[list[str], list[str]]:
    """(texts, ids) of a ``--texts`` file: its non-blank lines, each id ``FILE:LINE``; ``-`` reads
    stdin."""
    try:
        content = sys.stdin.read() if path == "-" else Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path!r} is not UTF-8 text (byte {exc.start})") from None
    lines = [(n, line) for n, line in enumerate(content.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(f"{path!r} holds no text")
    return [line for _, line in lines], [f"{path}:{n}" for n, _ in lines]


def inputs_given(args: argparse.Namespace, image_attr: str = "images") -> tuple[list, list[str], str]:
    """(inputs, ids, modality) from a command's image arguments or its ``--text``/``--texts``,
    exactly one kind. A text's id is the text itself (``--text``) or ``FILE:LINE``."""
    images = getattr(args, image_attr, None) or []
    images = [images] if isinstance(images, str) else list(images)
    texts, ids = list(args.text or []), list(args.text or [])
    if args.texts:
        more, more_ids = read_texts_file(args.texts)
        texts += more
        ids += more_ids
    if images and texts:
        raise UsageError("give images or texts (--text/--texts), not both")
    if texts:
        return texts, ids, "text"
    if not images:
        raise UsageError("give images, or texts with --text/--texts")
    kept = existing_images(images, getattr(args, "skip_bad", False))
    return kept, kept, "image"


def refuse_existing(path: str | Path, what: str, overwrite: bool) -> None:
    """An output that already exists is replaced only when the user said so."""
    if Path(path).exists() and not overwrite:
        raise InputError(f"{str(path)!r} already holds {what}; pass --overwrite to replace it")


def token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None
