"""Which failures are the user's to fix, and the one line that tells them: shared by the
command line (an exit status 1 and the line) and the server (a JSON error and a status).

A failure is the user's when semhash raised it on purpose: one of its own error types
(bad corpus, bad query, damaged file, no such database...), or a ``ValueError``/``KeyError``
that a ``raise`` statement in semhash's code raised with a message. A ``KeyError`` from a
failed lookup is a bug, and keeps its traceback.
"""

from __future__ import annotations

import linecache
from pathlib import Path

from semhash.estimator import ModelFormatError
from semhash.index.cache import IndexFileError
from semhash.index.database import DatabaseError
from semhash.index.document_store import NoSuchDocument
from semhash.index.locks import LockTimeout
from semhash.index.recall import RecallFileError
from semhash.index.search import QueryError
from semhash.pipelines.corpus_common import CorpusError

EXPECTED = (CorpusError, DatabaseError, IndexFileError, RecallFileError, QueryError, ModelFormatError,
            LockTimeout, FileNotFoundError, NoSuchDocument)


def user_message(exc: BaseException) -> str | None:
    """The one line to show for a failure that is the user's to fix; None for a bug."""
    if isinstance(exc, EXPECTED) or (isinstance(exc, (KeyError, ValueError)) and raised_on_purpose(exc)):
        return str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    return None


def raised_on_purpose(exc: BaseException) -> bool:
    """Whether semhash's own code raised ``exc`` with a ``raise`` statement (a message for the
    user), rather than, say, a failed lookup: a bug, whose traceback must stay visible."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    filename = Path(tb.tb_frame.f_code.co_filename).resolve()
    ours = any(filename.is_relative_to(folder) for folder in _source_folders())
    return ours and linecache.getline(str(filename), tb.tb_lineno).lstrip().startswith("raise")


def _source_folders() -> list[Path]:
    """The folders of semhash's modules (side by side in a checkout, nested when installed)."""
    import semhash
    import semhash.index
    import semhash.pipelines

    return [Path(package.__file__).resolve().parent for package in (semhash, semhash.index, semhash.pipelines)]
