"""The `easel` subcommands, one module per stage, all on the top floor.

Each module has a `register(subparsers)` function and imports only argparse-level things at the
top, so `easel --help` stays fast; the handlers import the stage they run (Ray, torch, the
kubernetes client) when they are called.
"""

from __future__ import annotations

# Order is the order shown in `easel --help`.
COMMAND_MODULES = (
    "easel.commands.bench",
    "easel.commands.serve",
    "easel.commands.load",
    "easel.commands.score",
    "easel.commands.compare",
    "easel.commands.cluster",
)

__all__ = ["COMMAND_MODULES"]
