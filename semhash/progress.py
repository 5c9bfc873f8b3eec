"""Progress of long work, through one channel: the standard ``logging`` module.

Every step that takes a while (reading a corpus, pretraining, fine-tuning, t-SNE,
indexing, evaluating) writes its progress lines, at INFO level, to the logger of its
module (``logging.getLogger(__name__)``, all under ``"semhash"``). As with any library,
the program decides where they go (``logging.getLogger("semhash").setLevel(logging.INFO)``
plus a handler); by default they are dropped. ``verbose=True`` (the scikit-learn
parameter of the estimators, and of the pipeline functions) shows them on stderr while
the call runs, unless logging is already set up to show them; the CLI does the same
unless ``-q``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

ROOT = "semhash"


class _StderrHandler(logging.StreamHandler):
    """Plain lines to whatever ``sys.stderr`` is when a line is written (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


@contextmanager
def shown_while(verbose: bool) -> Iterator[None]:
    """Within the block, show progress on stderr if ``verbose`` and nothing shows it yet."""
    logger = logging.getLogger(ROOT)
    if not verbose or logger.isEnabledFor(logging.INFO):
        yield
        return
    handler, level, propagate = _StderrHandler(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a handler the program set on the root would print each line twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def shows_progress(logger: logging.Logger) -> bool:
    """Whether progress lines of ``logger`` go anywhere (e.g. to decide on a progress bar)."""
    return logger.isEnabledFor(logging.INFO)


def reports_progress(function):
    """Decorator: run ``function`` inside :func:`shown_while` of its ``verbose`` argument."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        verbose = signature.bind_partial(*args, **kwargs).arguments.get("verbose", signature.parameters["verbose"].default)
        with shown_while(bool(verbose)):
            return function(*args, **kwargs)

    return wrapper
