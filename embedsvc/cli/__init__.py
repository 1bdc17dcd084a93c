"""``embedsvc`` command line: one module per command group, each a thin shell over the Python API.

Exit codes: 0 success; 1 an error in the input or the environment (one line on stderr); 2 bad
usage: an unknown flag, a value out of range, a contradictory combination (one line on stderr);
130 interrupted. Building the parser imports no torch, scikit-learn, FAISS or grpc; each command
imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .common import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TOKEN_ENV, InputError,
                     Parser, UsageError, err)

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> Parser:
    from .. import __version__
    from . import adapt, data, finetune, heads, local_models, remote, serve

    parser = Parser(
        prog="embedsvc",
        description="Transfer learning as a service: embed images with pretrained backbones, "
                    "store and index the vectors, train heads, fine-tune, serve over gRPC.",
        epilog="examples:\n"
               "  embedsvc datasets fetch digits --out data/digits\n"
               "  embedsvc embed-dataset data/digits --out stores/digits\n"
               "  embedsvc train-head stores/digits --out heads/digits\n"
               "  embedsvc serve --data-dir /srv/embedsvc\n"
               f"\nexit codes: 0 ok, 1 bad input or environment, 2 bad usage, 130 interrupted.\n"
               f"{TOKEN_ENV}: the bearer token 'serve' requires and 'client' sends.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"embedsvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    for module in (local_models, data, heads, adapt, finetune, serve, remote):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..malloc import tune_malloc

    tune_malloc()  # before torch allocates its first activation buffer
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..errors import EmbedsvcError

    try:
        return args.func(args)
    except UsageError as exc:
        print(f"{args.prog}: error: {exc} (see '{args.prog} --help')", file=sys.stderr)
        return EXIT_USAGE
    except (EmbedsvcError, InputError) as exc:
        err(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        resume = getattr(args, "on_interrupt", None)  # a command that can resume says how
        err(f"interrupted; {resume()}" if resume else "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `embedsvc ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # e.g. --out in a read-only place
        err(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_ERROR
