"""Plumbing shared by the benchmark scripts: paths, corpora, fitted-model cache, results.

The scripts run as ``python benchmarks/<name>.py`` from any directory: Python puts their
folder on ``sys.path``, so ``import _common`` finds this file, and ``semhash`` is the
installed package. What is here:

* paths: :data:`REPO`, :data:`RESULTS`, :data:`NEWSGROUPS` (the bundled archive),
  :data:`SHARED_DATA` (``../shared/data`` beside the checkout), and :func:`log`;
* corpora: :func:`read_documents` (a corpus split, read quietly), :func:`count_words`
  (word counts of several splits over one vocabulary, documents without a vocabulary
  word dropped), :func:`save_arrays` / :func:`load_arrays` (an ``.npz`` of arrays and
  sparse matrices, no pickle), and :func:`newsgroups_counts`, the cached 20 Newsgroups
  train/test counts most text benchmarks start from;
* fitted models: :func:`fit_or_load` keeps a fitted estimator in a folder, keyed by its
  parameters, its training rows and the ``semhash`` sources it depends on (any change
  refits, nothing stale is reused); :func:`fit_networks` fits several text networks in
  worker processes with the same cache;
* per-seed figures: :func:`aggregate` (mean and sample std over seeds) and :func:`find`;
* results: :func:`environment` (platform, cores, threads, date) and :func:`write_results`
  (``<stem>.json`` and ``<stem>.md``, written atomically, with the environment);
* arguments: :func:`add_out_argument` and :func:`folder_or_none`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from semhash.files import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NEWSGROUPS = REPO / "data" / "20news-bydate.tar.gz"
SHARED_DATA = REPO.parent / "shared" / "data"
TMP = Path(tempfile.gettempdir())
# 20 Newsgroups word counts (and retrieval.py's fitted networks), shared by the text benchmarks.
NEWSGROUPS_CACHE = TMP / "semhash-retrieval-cache"


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ arguments
def folder_or_none(value: str) -> Path | None:
    """An ``argparse`` type for cache folders: ``none`` turns the cache off."""
    return None if str(value).lower() == "none" else Path(value)


def code_state() -> dict:
    """The commit of the checkout and the package files changed since (read-only git)."""
    def git(*command: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True,
                                  timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = git("status", "--porcelain", "--", "server", "index", "pipelines", "semhash", "cli.py")
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "changed": [line[3:] for line in changed.splitlines()]}


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``: where the results go (default ``benchmarks/results``; quick runs
    checked by hand go to a temporary folder, so committed results stay as they are)."""
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results (default benchmarks/results)")


# -------------------------------------------------------------------------- corpora
def read_documents(source: Path, subdir: str | None = None, limit: int | None = None) -> list:
    """The documents of one corpus split; the reader's warnings (skipped files) are silenced."""
    from semhash.pipelines.corpus import read_corpus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_corpus(source, subdir=subdir, limit=limit)


def count_words(texts: dict[str, list[str]], vocabulary) -> tuple:
    """``(counter, counts, kept)`` for each split of ``texts``: float32 CSR word counts and
    the indices of the rows kept; a text with no vocabulary word cannot be encoded and is
    dropped. ``vocabulary`` is a fitted ``WordCounter``, or a vocabulary size for one fit
    on the first split."""
    from semhash.vectorize import WordCounter, empty_rows

    splits = list(texts)
    if isinstance(vocabulary, WordCounter):
        counter, raw = vocabulary, {}
    else:
        counter = WordCounter(max_words=int(vocabulary))
        raw = {splits[0]: counter.fit_transform(texts[splits[0]])}
    counts, kept = {}, {}
    for split in splits:
        matrix = raw[split] if split in raw else counter.transform(texts[split])
        kept[split] = np.setdiff1d(np.arange(matrix.shape[0]), empty_rows(matrix))
        counts[split] = sp.csr_matrix(matrix[kept[split]], dtype=np.float32)
    return counter, counts, kept


def save_arrays(path: Path, arrays: dict) -> None:
    """Arrays, CSR matrices and scalars in one ``.npz`` (read back by :func:`load_arrays`)."""
    flat = {}
    for name, value in arrays.items():
        if sp.issparse(value):
            value = sp.csr_matrix(value)
            flat.update({f"{name}_data": value.data, f"{name}_indices": value.indices,
                         f"{name}_indptr": value.indptr, f"{name}_shape": np.array(value.shape)})
        else:
            flat[name] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    atomic_write_bytes(path, buffer.getvalue())  # an interrupted run never leaves a half-written cache


def load_arrays(path: Path) -> dict:
    """What :func:`save_arrays` wrote: CSR matrices rebuilt, 0-d arrays as Python scalars."""
    with np.load(path, allow_pickle=False) as saved:
        names = set(saved.files)
        out = {}
        for name in sorted(n.removesuffix("_indptr") for n in names if n.endswith("_indptr")):
            if {f"{name}_data", f"{name}_indices", f"{name}_shape"} <= names:
                out[name] = sp.csr_matrix((saved[f"{name}_data"], saved[f"{name}_indices"], saved[f"{name}_indptr"]),
                                          shape=tuple(saved[f"{name}_shape"]))
                names -= {f"{name}_{part}" for part in ("data", "indices", "indptr", "shape")}
        for name in names:
            value = saved[name]
            out[name] = value.item() if value.ndim == 0 else value
    return out


NEWSGROUPS_QUICK_SIZES = (3000, 1000)  # train, test posts of a quick run: a seeded sample


def newsgroups_counts(vocab: int, quick: bool, cache: Path | None, data: Path = NEWSGROUPS) -> dict:
    """Word counts and integer labels of the 20 Newsgroups train and test posts.

    The vocabulary (``vocab`` words) is fit on train; posts with no vocabulary word are
    dropped from either side (``dropped``: how many, train and test). ``quick``: a seeded
    sample of :data:`NEWSGROUPS_QUICK_SIZES` posts. Cached as ``.npz`` in ``cache``."""
    path = cache / f"counts-v{vocab}{'-quick' if quick else ''}.npz" if cache else None
    if path is not None and path.exists():
        out = load_arrays(path)
        out.update(label_names=[str(x) for x in out["label_names"]], dropped=out["dropped"].tolist())
        log(f"word counts from cache {path}")
        return out
    started = time.perf_counter()
    docs = {split: read_documents(data, f"20news-bydate-{split}") for split in ("train", "test")}
    if quick:
        for split, n in zip(("train", "test"), NEWSGROUPS_QUICK_SIZES):
            rows = np.random.default_rng(0).choice(len(docs[split]), min(n, len(docs[split])), replace=False)
            docs[split] = [docs[split][i] for i in np.sort(rows)]
    names = sorted({d.label for d in docs["train"]} | {d.label for d in docs["test"]})
    index = {name: i for i, name in enumerate(names)}
    counter, counts, kept = count_words({split: [d.text for d in docs[split]] for split in docs}, vocab)
    out = dict(counts)
    for split in ("train", "test"):
        out[f"{split}_labels"] = np.array([index[docs[split][i].label] for i in kept[split]], dtype=np.int32)
    out.update(label_names=names, dropped=[len(docs[s]) - len(kept[s]) for s in ("train", "test")],
               n_words=len(counter.words_))
    log(f"read and counted {vocab}-word vocabulary in {time.perf_counter() - started:.0f}s")
    if path is not None:
        save_arrays(path, out)
    return out


# ------------------------------------------------------------------- fitted models
# A text hasher does not depend on the map-only or image modules: changing those does not
# refit it (and so on); every other semhash source is part of a fitted model's key.
SOURCES_SKIPPED = {
    "SemanticHasher": {"topic_map.py", "parametric_tsne.py", "image_hasher.py"},
    "TopicMap": {"image_hasher.py"},
    "ImageHasher": {"topic_map.py", "parametric_tsne.py"},
}


def data_digest(X) -> str:
    """A digest of a training matrix (dense or sparse): the rows a model is fit on."""
    digest = hashlib.sha256()
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        parts = (X.data, X.indices, X.indptr)
    else:
        parts = (np.ascontiguousarray(X),)
    digest.update(repr((type(X).__name__, X.shape, str(X.dtype))).encode())
    for part in parts:
        digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    return digest.hexdigest()


def model_path(folder: Path, model, X) -> Path:
    """Where ``model`` (unfitted), fit on ``X``, is kept in ``folder``: keyed by its class,
    parameters (verbosity aside), training rows and the ``semhash`` sources it depends on."""
    name = type(model).__name__
    params = {k: v for k, v in model.get_params().items() if k != "verbose"}
    package = Path(sys.modules[type(model).__module__].__file__).parent
    skipped = SOURCES_SKIPPED.get(name, set())
    sources = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(package.glob("*.py")) if p.name not in skipped))
    key = json.dumps({"class": name, "params": params, "data": data_digest(X), "sources": sources.hexdigest()},
                     sort_keys=True, default=str)
    return Path(folder) / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.model"


def _fit_and_save(model, X, path: Path | None, threads: int | None = None):
    """Fit ``model`` on ``X`` (with ``threads`` torch threads, if given), keep what the model
    file does not (the fine-tuning history, the fit's warnings) and save both at ``path``."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X)
    model.fit_warnings_ = [str(w.message) for w in caught]
    for message in model.fit_warnings_:
        log(f"warning while fitting {type(model).__name__}: {message}")
    if path is not None:
        record = {"finetune_history": model.finetune_history_, "fit_warnings": model.fit_warnings_}
        write_text(path.with_suffix(".json"), json.dumps(record))
        model.save(path)  # last: a model file is only ever read with its record
    return model


def _load(cls, path: Path):
    model = cls.load(path)
    record = json.loads(path.with_suffix(".json").read_text())
    model.finetune_history_ = [tuple(epoch) for epoch in record["finetune_history"]]
    model.fit_warnings_ = record["fit_warnings"]
    return model


def fit_or_load(model, X, folder: Path | None):
    """``(fitted model, fit seconds, whether it came from the cache)``: ``model`` fit on
    ``X``, or the one fit before with the same settings, rows and code (:func:`model_path`).
    ``folder`` None: always fit, keep nothing."""
    path = model_path(folder, model, X) if folder is not None else None
    if path is not None and path.is_file():
        loaded = _load(type(model), path)
        return loaded, loaded.fit_seconds_, True
    model = _fit_and_save(model, X, path)
    return model, model.fit_seconds_, False


def text_network(kind: str, size: int, seed: int, params: dict):
    """An unfitted ``SemanticHasher`` (``kind="hasher"``, ``size`` bits) or ``TopicMap``
    (``"map"``, ``size`` dimensions) with seed ``seed`` and estimator overrides ``params``."""
    from semhash.hasher import SemanticHasher
    from semhash.topic_map import TopicMap

    if kind == "hasher":
        return SemanticHasher(n_bits=size, random_state=seed, **params)
    if kind == "map":
        return TopicMap(n_components=size, random_state=seed, **params)
    raise ValueError(f"unknown network kind {kind!r}; choose 'hasher' or 'map'")


def fit_networks(
    jobs, counts, params: dict, cache: Path, *, workers: int = 1, log: Callable[[str], None] = lambda line: None,
    meanwhile: Callable[[], None] | None = None,
):
    """Fit ``jobs`` -- ``(kind, size, seed)`` for :func:`text_network` -- on ``counts`` and
    yield ``(job, model, fit_seconds, cached)`` as each is ready.

    Networks already in ``cache`` (:func:`model_path`) are loaded, not refit. The rest are
    fit in ``workers`` processes with one torch thread each: on a few cores, separate
    single-threaded fits use them better than one fit's parallel matrix products (the
    networks' layers are too small to scale). ``params`` maps a kind to its estimator
    overrides. ``meanwhile`` is called once in this process while the workers fit (e.g.
    to score cheap baselines on what would be an idle core).
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    models = {job: text_network(*job, params.get(job[0], {})) for job in jobs}
    paths = {job: model_path(cache, models[job], counts) for job in jobs}
    todo = []
    for job in jobs:
        if not paths[job].exists():
            todo.append(job)
            continue
        model = _load(type(models[job]), paths[job])
        yield job, model, model.fit_seconds_, True
    meanwhile = meanwhile or (lambda: None)
    if not todo:
        meanwhile()
        return
    workers = max(1, min(int(workers), len(todo)))
    log(f"fitting {len(todo)} networks in {workers} process{'es' if workers > 1 else ''}")
    if workers == 1:
        meanwhile()
        for job in todo:
            _fit_and_save(models[job], counts, paths[job])
            model = _load(type(models[job]), paths[job])  # as read from the cache: one path for both
            yield job, model, model.fit_seconds_, False
        return
    # spawn, not fork: a forked child inherits the parent's OpenMP state and can hang.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_fit_in_worker, models[job], counts, paths[job]): job for job in todo}
        meanwhile()
        for future in as_completed(futures):
            job = futures[future]
            future.result()
            model = _load(type(models[job]), paths[job])
            yield job, model, model.fit_seconds_, False


def _fit_in_worker(model, X, path: Path) -> None:
    """One fit in a worker process, one torch thread; the model comes back through ``path``."""
    _fit_and_save(model, X, path, threads=1)


# ---------------------------------------------------------------- per-seed figures
_FIGURES = ("p_at_10", "p_at_100", "mean_ap", "seconds_fit", "seconds_encode")


def _present(values) -> list:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _mean(values) -> float | None:
    values = _present(values)
    return float(np.mean(values)) if values else None


def _std(values) -> float | None:
    values = _present(values)
    if not values:
        return None
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    """Per-seed rows (``RetrievalReport.to_dict()`` plus ``seed`` and extra keys) to one
    row per (method, n_bits_or_dims): the mean of every figure over seeds, its sample
    std (``*_std``; 0 with one seed), ``n_seeds`` and ``seeds``, and the mean PR curve.
    Order of first appearance is kept."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["n_bits_or_dims"]), []).append(row)
    table = []
    for (method, size), members in groups.items():
        first = members[0]
        out = {key: value for key, value in first.items() if key not in _FIGURES + ("seed", "recall", "precision")}
        out.update(method=method, n_bits_or_dims=size, n_seeds=len(members), seeds=[m.get("seed") for m in members])
        for key in _FIGURES:
            out[key] = _mean(m.get(key) for m in members)
            out[f"{key}_std"] = _std([m.get(key) for m in members])
        curves = [m["precision"] for m in members if m.get("precision")]
        out["recall"] = list(first.get("recall") or [])
        out["precision"] = [float(v) for v in np.mean(curves, axis=0)] if curves else []
        table.append(out)
    return table


def find(table: list[dict], method: str, size: int | None = None) -> dict | None:
    """The aggregated row of ``method`` (at ``size``), or None."""
    for row in table:
        if row["method"] == method and (size is None or row["n_bits_or_dims"] == size):
            return row
    return None


# -------------------------------------------------------------------------- results
def environment() -> dict:
    """Where and when the figures were measured: timings only compare on like machines."""
    torch = sys.modules.get("torch")  # only when the benchmark uses it: no import for this
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": getattr(torch, "__version__", None),
        "torch_threads": torch.get_num_threads() if torch else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # The machine may be shared: wall-clock times are only comparable at similar load.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def environment_line(env: dict) -> str:
    threads = f", {env['torch_threads']} torch threads" if env.get("torch_threads") else ""
    load = f", load average {env['load_average'][0]:.1f}" if env.get("load_average") else ""
    return f"Environment: {env['platform']}, {env['cpu_count']} cores{threads}{load}; {env['date']}."


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: a reader (or an interrupted run) never sees half a file."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def write_results(out: Path, stem: str, result: dict, markdown: str | None = None) -> dict[str, Path]:
    """``<out>/<stem>.json`` (``result``, given an ``environment`` if it has none) and, with
    ``markdown``, ``<out>/<stem>.md`` ending in the environment line. Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = result.setdefault("environment", environment())
    paths = {"json": out / f"{stem}.json"}
    write_text(paths["json"], json.dumps(result, indent=1, default=str) + "\n")
    if markdown is not None:
        paths["md"] = out / f"{stem}.md"
        write_text(paths["md"], markdown.rstrip("\n") + "\n\n" + environment_line(env) + "\n")
    return paths
