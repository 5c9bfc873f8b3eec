"""A collection kept current for a long-running reader.

A server loads models and indexes once, but another process may meanwhile add documents
(``semhash add``) or retrain the collection. :class:`LiveCollection` polls the database's
:meth:`~semhash.index.database.Database.revision` in a background thread; when it changes,
a fresh :class:`~semhash.index.search.SearchEngine` is loaded and warmed *beside* the one in
use and then swapped in, so no query waits for the reload and none sees half of one.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from semhash.index.database import Database
from semhash.index.models import collection_of
from semhash.index.recall import DocumentMemory
from semhash.index.search import SearchEngine

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """One consistent view of the collection: the engine loaded for one revision, and what
    is derived from it on first use (recall memories, the map's points)."""

    revision: str
    engine: SearchEngine
    derived: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ready(self) -> bool:
        """Whether there is something to search: the collection's long-code model."""
        return self.engine.has_model(self.engine.collection.long)

    def derive(self, key, make):
        """``make()``, computed once per generation (thread-safe; slow ones run once)."""
        with self.lock:
            if key not in self.derived:
                self.derived[key] = make()
            return self.derived[key]

    def memory(self, codes_only: bool) -> DocumentMemory:
        return self.derive(("memory", codes_only), lambda: DocumentMemory(self.engine.db, words=not codes_only, engine=self.engine))


class LiveCollection:
    """The current :class:`Generation` of one database, reloaded when its revision changes."""

    def __init__(self, database: str | os.PathLike, *, poll_seconds: float = 1.0, index_dir=None) -> None:
        self.db = Database(database, create=False, index_dir=index_dir)
        self.poll_seconds = poll_seconds
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current = self._load(self.db.revision())

    def _load(self, revision: str, previous: Generation | None = None) -> Generation:
        engine = SearchEngine(self.db, collection_of(self.db))
        if previous is not None:
            engine.adopt_models(previous.engine)  # new codes, same models: only the indexes reload
        generation = Generation(revision, engine)
        if generation.ready:
            engine.warm()
            if previous is None:
                engine.preload_hits()  # once: later generations keep them (adopt_models)
        return generation

    def refresh(self) -> bool:
        """Swap in a fresh generation if the database changed; whether it did."""
        with self._reload_lock:
            revision = self.db.revision()
            if revision == self.current.revision:
                return False
            self.current = self._load(revision, self.current)
            log.info("the collection changed: reloaded its models and indexes")
            return True

    # ------------------------------------------------------------ polling
    def start(self) -> None:
        """Poll for changes every ``poll_seconds`` in a daemon thread (0: never)."""
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="semhash-refresh", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as err:  # a writer mid-rebuild, a locked file: keep serving, try again
                log.warning(f"could not reload the collection ({type(err).__name__}: {err}); will retry")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.db.close()
