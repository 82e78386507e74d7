"""The command line: ``stream-migrator VERB``; one module per group of verbs.

:mod:`stream_migrator.cli.main` builds the parser and dispatches; ``reconcile``,
``rollout``/``plan``/``audit``, ``spec`` and ``quarantine`` register their verbs
from the modules beside it. Command modules only parse arguments and call the
wiring (:mod:`stream_migrator.app`) or a stage package; nothing below imports them.
"""

from stream_migrator.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
