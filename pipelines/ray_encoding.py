"""Encoding batches on Ray workers: actors that hold the vocabulary and the models.

:func:`ray_pool` starts (or joins) a Ray cluster and one actor per worker CPU, each given
the collection's :meth:`~semhash.pipelines.streaming.BatchEncoder.to_state` (the
vocabulary as JSON, each model in its own safe format, read back with weights only: no
pickled model travels). The driver reads the corpus and writes the database; the actors
count words and encode, each batch being exactly the batch the single-process path
encodes, so the codes are the same bit for bit.

Only actors do work (no Ray tasks): tasks that ask for a CPU wait forever while the
actors hold every CPU of a small cluster. A local cluster is bounded: ``num_cpus`` CPUs
(2 by default), a small object store, no dashboard, no worker logs on the driver's
terminal; it is shut down at the end. Joining an existing cluster (``"auto"``,
``"ray://host:10001"``) needs semhash installed on its nodes, and uses one actor per
CPU it has free (at most :data:`MAX_REMOTE_WORKERS`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

LOCAL = "local"  # ray=LOCAL: a local cluster started for the run
LOCAL_WORKERS = 2
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a few batches of texts, counts and codes in flight
MAX_REMOTE_WORKERS = 64


class RayUnavailable(ValueError):
    """Ray is not installed, or the cluster cannot be reached (the user's to fix: a ValueError)."""


class EncoderWorker:
    """A Ray actor's state: a :class:`~semhash.pipelines.streaming.BatchEncoder` rebuilt
    from its plain-data state, counting and encoding what the driver sends, in order."""

    def __init__(self, state: dict) -> None:
        import torch

        from semhash.pipelines.streaming import BatchEncoder

        torch.set_num_threads(1)  # one CPU each, as Ray gives it
        self.encoder = BatchEncoder.from_state(state)

    def encode_texts(self, texts):
        return self.encoder.encode_texts(texts)


class RayPool:
    """The actors, each call going to the one with the fewest calls outstanding; results
    are fetched with :meth:`get`, in the order the caller chooses."""

    def __init__(self, ray, actors: list) -> None:
        self._ray, self._actors = ray, actors
        self._outstanding = [0] * len(actors)
        self._owner: dict = {}
        self.workers = len(actors)

    def _submit(self, method: str, argument):
        index = min(range(len(self._actors)), key=self._outstanding.__getitem__)
        reference = getattr(self._actors[index], method).remote(argument)
        self._outstanding[index] += 1
        self._owner[reference] = index
        return reference

    def encode_texts(self, texts):
        return self._submit("encode_texts", texts)

    def get(self, reference):
        try:
            return self._ray.get(reference)
        finally:
            self._outstanding[self._owner.pop(reference)] -= 1


def _import_ray():
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable("encoding on Ray workers (--ray) needs Ray: pip install 'ray==2.60.0'") from error
    return ray


LOCAL_START_TRIES = 2


def _init(ray, options: dict, retry: bool) -> None:
    """``ray.init``; a local cluster whose processes did not register within Ray's fixed
    30 s (a machine busy with other work) is started once more before giving up."""
    tries = LOCAL_START_TRIES if retry else 1
    for attempt in range(1, tries + 1):
        try:
            ray.init(**options)
            return
        except Exception as error:  # a bad address, an unreachable cluster, no shared memory...
            ray.shutdown()  # the processes of the half-started cluster, if any
            if attempt < tries and "timed out during startup" in str(error):
                log.warning(f"the local Ray cluster did not start in time ({error}); starting it again")
                continue
            raise RayUnavailable(f"cannot start or join the Ray cluster {options['address']!r}: {error}") from error


@contextlib.contextmanager
def ray_pool(address: str, state: dict, workers: int | None = None) -> Iterator[RayPool]:
    """Actors holding ``state`` on the cluster at ``address`` (:data:`LOCAL`: a local one of
    ``workers`` CPUs, 2 by default, started here and shut down at the end)."""
    if address not in (LOCAL, "auto") and ":" not in address:
        raise RayUnavailable(f"{address!r} is not a Ray cluster address: give none (a local cluster), auto, "
                             "HOST:PORT or ray://HOST:PORT")
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        options = dict(address=address, log_to_driver=False, logging_level=logging.ERROR)
        if address == LOCAL:  # "local": a new cluster, even where RAY_ADDRESS names another
            options.update(num_cpus=workers or LOCAL_WORKERS, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                           include_dashboard=False)
        _init(ray, options, retry=address == LOCAL)
        started_here = True
    try:
        if workers is None:
            free = int(ray.available_resources().get("CPU", 0))
            workers = LOCAL_WORKERS if address == LOCAL else max(1, min(free, MAX_REMOTE_WORKERS))
        actor_class = ray.remote(num_cpus=1)(EncoderWorker)
        shared = ray.put(state)  # once in the object store, not once per actor
        actors = [actor_class.remote(shared) for _ in range(workers)]
        log.info(f"encoding on {workers} Ray workers ({'a local cluster' if address == LOCAL else address})")
        try:
            yield RayPool(ray, actors)
        finally:
            for actor in actors:
                ray.kill(actor)
    finally:
        if started_here:
            ray.shutdown()

