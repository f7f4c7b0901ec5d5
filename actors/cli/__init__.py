"""``wfdag``, the command line: :mod:`~actors.cli.main` (the parser, global options, exit
codes), one module per group of verbs (:mod:`~actors.cli.execute`, :mod:`~actors.cli.inspect`,
:mod:`~actors.cli.admin`) and :mod:`~actors.cli.render` (what is printed).  It calls only the
public API (:mod:`actors.api`)."""

from actors.cli.main import EXIT_CODES, build_parser, main

__all__ = ["EXIT_CODES", "build_parser", "main"]
