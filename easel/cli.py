"""The `easel` command line.

Each stage's subcommands live in one module of `easel.commands` with a `register(subparsers)`
function; those modules import only argparse-level things at the top, so `easel --help` stays
fast and heavy imports (torch, ray) happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from config import ConfigError
from easel.commands import COMMAND_MODULES

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The `easel` parser with every package's subcommands registered."""
    parser = argparse.ArgumentParser(
        prog="easel",
        description="Serve, load-test, score and price text-to-image models on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one easel command; returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"easel: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
