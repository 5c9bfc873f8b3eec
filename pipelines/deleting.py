"""Deleting documents from a collection: what ``semhash delete`` and the server's
``DELETE /api/documents/{key}`` share.

The documents, their codes and pixels go in one transaction of the database
(:meth:`~semhash.index.database.Database.delete_documents`): all of them or, when a key
names no document (and ``missing_ok`` is not given), none. Then what is searched is brought
up to date at once, as :func:`~semhash.pipelines.indexing.add_documents` does after adding
(:func:`~semhash.pipelines.indexing.build_search_structures`; for a very large collection,
the local files are left to the next search):

* local search files (FAISS indexes, the address table) are rebuilt; the others (cells,
  the recall memory) are stale by their code fingerprint and rebuilt on their next use;
* in PostgreSQL with pgvector, the searched bit strings went with their codes (a cascading
  foreign key);
* codes kept in Milvus (``SEMHASH_CODES``) are deleted there (by id; any other engine that
  opens the collection would do the same before its first search).

A run stopped after the transaction has deleted everything it was asked to (what is derived
is rebuilt when next used); run again with ``missing_ok``, it finds nothing left to do.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

from semhash.index.database import Database
from semhash.index.locks import writes_database
from semhash.pipelines.indexing import build_search_structures
from semhash.progress import reports_progress

log = logging.getLogger(__name__)


@reports_progress
@writes_database()
def delete_documents(database: str | os.PathLike, keys: Iterable[str | int], *, missing_ok: bool = False,
                     verbose: bool = False) -> dict:
    """Delete the documents that ``keys`` name (ids, or external ids) from ``database``.

    Returns ``{"deleted": n, "ids": [...], "missing": [keys naming no document],
    "documents": how many are left, "seconds": ...}``. A key naming no document is a
    KeyError that names it, and nothing is deleted, unless ``missing_ok``.
    """
    started = time.perf_counter()
    keys = list(keys)
    with Database(database, create=False) as db:
        missing = []
        if missing_ok:
            found = db.document_ids(keys)
            missing = [key for key in dict.fromkeys(keys) if key not in found]
        ids = db.delete_documents(keys, missing_ok=missing_ok)
        log.info(f"deleted {len(ids)} documents" + (f"; {len(missing)} of the keys named no document" if missing else ""))
        if ids:
            build_search_structures(db)
        remaining = db.count_documents()
    return {"deleted": len(ids), "ids": ids, "missing": missing, "documents": remaining,
            "seconds": round(time.perf_counter() - started, 2)}

