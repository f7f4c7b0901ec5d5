"""``wfdag``, the command line: :mod:`~actors.cli.command` (the parser, global options, exit
codes), one module per group of verbs (:mod:`~actors.cli.execute`, :mod:`~actors.cli.inspect`,
:mod:`~actors.cli.admin`) and :mod:`~actors.cli.render` (what is printed).  It calls only the
public API (:mod:`actors.api`).  The entry point is :func:`actors.cli.quick.main`: ``wfdag
status`` asks the running service without importing the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.cli.quick import main

if TYPE_CHECKING:
    from actors.cli.command import EXIT_CODES, build_parser

__all__ = ["EXIT_CODES", "build_parser", "main"]


def __getattr__(name: str) -> Any:
    # The parser and the verbs are imported when asked for (``main`` may not need them).
    if name in ("EXIT_CODES", "build_parser"):
        from actors.cli import command

        return getattr(command, name)
    raise AttributeError(f"module 'actors.cli' has no attribute {name!r}")
