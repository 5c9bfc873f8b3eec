"""Progress of long work, through one channel: the standard ``logging`` module.

Every step that takes a while (reading a corpus, pretraining, fine-tuning, t-SNE,
indexing, evaluating) writes its progress lines, at INFO level, to the logger of its
module (``logging.getLogger(__name__)``, all under ``"semhash"``). As with any library,
the program decides where they go; by default they are dropped. The CLI shows them on
stderr unless ``-q``; an estimator's ``verbose=True`` (the scikit-learn parameter) shows
its own lines on stderr while it fits, unless logging is already set up to show them.
"""

from __future__ import annotations

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


def show_progress(enabled: bool = True) -> None:
    """Show semhash's progress lines on stderr from now on (or stop showing them)."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if enabled:
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.WARNING)


@contextmanager
def shown_while(verbose: bool) -> Iterator[None]:
    """Within the block, show progress on stderr if ``verbose`` and nothing shows it yet."""
    logger = logging.getLogger(ROOT)
    if not verbose or logger.isEnabledFor(logging.INFO):
        yield
        return
    handler, level = _StderrHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def shows_progress(logger: logging.Logger) -> bool:
    """Whether progress lines of ``logger`` go anywhere (e.g. to decide on a progress bar)."""
    return logger.isEnabledFor(logging.INFO)
