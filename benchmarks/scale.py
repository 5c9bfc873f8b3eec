"""Scale: `semhash index` and search at 100k, 1M and 10M documents, through every backend.

The corpus (``benchmarks/scale_corpus.py``) is the 20 Newsgroups training posts followed by
perturbed copies of them, written once as JSON lines at the largest size; smaller sizes are
its first n lines (``semhash index --limit n``). Every run is the real command in its own
process (``semhash index CORPUS --db ... --json``), timed, its peak resident memory read
from the operating system (``wait4``: the largest RSS of the process; with ``--ray`` the
workers are separate processes, reported apart).

Backends:

* ``sqlite``: the embedded default (SQLite file + FAISS files), at every size;
* ``sqlite+ray``: the same with ``--ray`` (a local cluster of 2 workers), at 1M: encoding
  time against one process, and whether the codes are identical;
* ``postgres``: ``--db postgresql+psycopg://...`` on a PostgreSQL 15 server with pgvector
  (started on 127.0.0.1 by this script, as the tests start it, unless ``--postgres URL``),
  at 1M: documents, models and codes in PostgreSQL, searched there;
* ``milvus``: the codes of the SQLite collections in a standalone Milvus server
  (``--codes milvus://...``, started here unless ``--milvus URI``), at 1M and at the largest
  size: copied there by the first search (timed as its build).

Every index run uses the same settings (``INDEX_OPTIONS``: a training sample of 5,000
documents and short training, since training cost does not depend on the collection size
and code quality is the subject of other benchmarks).

Search: the first ``--queries`` 20 Newsgroups *test* posts (never in the corpus), one at a
time, k=100, through :class:`semhash.index.search.SearchEngine` as `semhash search` runs it
(one torch and one FAISS thread), in each backend's modes (``exhaustive``; ``cells`` at the
default probes and a sweep; ``address``). Precision@100 (relevant: same newsgroup) is given
beside that of the exhaustive FAISS search of the *same* codes (local FAISS files of the same
database: for PostgreSQL with ``SEMHASH_PGVECTOR=off``) and as a ratio.

A multi-node run cannot be made here: its figures are a projection from the measured
per-worker encoding rate and the measured rate of the single writer, clearly marked.

    python benchmarks/scale.py                          # 100k, 1M, 10M (hours, ~40 GB of disk)
    python benchmarks/scale.py --sizes 100000 1000000   # without the 10M runs
    python benchmarks/scale.py --quick                  # 20k and 50k, a few minutes

Measurements are kept in ``WORK/measured.json`` as they are made: a re-run skips what is
there (``--fresh`` starts over). Results: ``benchmarks/results/scale.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    NEWSGROUPS,
    REPO,
    TMP,
    add_out_argument,
    code_state,
    environment,
    environment_line,
    log,
    read_documents,
    write_results,
)
from scale_corpus import write_corpus

INDEX_OPTIONS = ["--train-sample", "3000", "--max-corpus-mb", "100000"]
DEFAULT_PROBES = 16  # SearchOptions' default
PROBES_SWEEP = (4, 16, 64)
K = 100
ENCODING_DOCUMENTS = 200_000  # encoding alone, one process against Ray: held in memory
RUN_SECONDS = 90  # at most (then the queries so far) per search mode


# ------------------------------------------------------------------------ measured state
class Measured:
    """Measurements by key, saved after each one (atomically), so an interrupted run resumes."""

    def __init__(self, path: Path, fresh: bool) -> None:
        self.path = path
        self.values = {} if fresh or not path.exists() else json.loads(path.read_text())
        self.measured_now: set[str] = set()  # keys measured by this run, not read back

    def get(self, key: str, measure):
        if key not in self.values:
            self.values[key] = measure()
            self.measured_now.add(key)
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self.values, indent=1))
            os.replace(partial, self.path)
        return self.values[key]


# ------------------------------------------------------------------------ indexing
def peak_rss_mb(command: list[str], env: dict | None = None) -> dict:
    """Run ``command`` with ``/usr/bin/time``-like accounting: wall time and its own peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    # Read the pipes from threads so that wait4 (which reaps the child and gives its own
    # rusage, not a maximum over every child so far) can run in this one.
    import threading

    chunks = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda s=s, n=n: chunks[n].append(s.read())) for s, n in
               ((process.stdout, "out"), (process.stderr, "err"))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])} ... failed ({process.returncode}): {''.join(chunks['err'])[-2000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": "".join(chunks["out"])}


def index_run(corpus: Path, size: int, db: str, extra: list[str] = (), env: dict | None = None) -> dict:
    """`semhash index` of the first ``size`` documents into ``db``: the command's report and measurements."""
    command = [sys.executable, "-m", "semhash.cli", "index", str(corpus), "--limit", str(size), "--db", db,
               "--overwrite", "--json", "-q", *INDEX_OPTIONS, *extra]
    log(f"index {size:,} -> {db.split('@')[-1]} {' '.join(extra)}")
    measured = peak_rss_mb(command, env)
    report = json.loads(measured.pop("stdout"))
    seconds = report["seconds"]
    return {"size": size, "documents": report["documents"], "wall_s": measured["wall_s"],
            "peak_rss_mb": measured["peak_rss_mb"], "seconds": seconds,
            "encode_docs_per_s": round(report["documents"] / max(seconds.get("encode", 0), 1e-9)),
            "docs_per_s": round(report["documents"] / measured["wall_s"])}


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def storage_bytes(db: str) -> int:
    """Bytes the collection takes where it is stored (database and derived search files)."""
    if db.startswith("postgresql"):
        import sqlalchemy as sa

        engine = sa.create_engine(db)
        with engine.connect() as conn:
            size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        engine.dispose()
        return int(size)
    path = Path(db)
    return folder_bytes(path) + folder_bytes(Path(f"{db}.faiss")) if Path(f"{db}.faiss").exists() else folder_bytes(path)


def encoded_alike(db: str, corpus: Path, n: int = 20_000) -> dict:
    """How far the codes stored in ``db`` for its first ``n`` corpus documents are from those
    the database's own models give in this one process (the check of a ``--ray`` run): per
    model, the rows that differ, and for real-valued codes the largest difference (float
    sums in another batch order differ in the last bits; binary codes must not differ)."""
    from semhash.index.database import Database
    from semhash.index.models import load_model, load_vocabulary

    with open(corpus, encoding="utf-8") as lines:
        records = [json.loads(line) for _, line in zip(range(n), lines)]
    out = {}
    with Database(db, create=False) as database:
        counts = load_vocabulary(database).transform([r["text"] for r in records])
        keep = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
        ids = database.document_ids([records[i]["id"] for i in keep])
        order = np.array([ids[records[i]["id"]] for i in keep])
        for model in database.list_models():
            fresh = np.asarray(load_model(database, model.name).model.transform(counts[keep]))
            stored_ids, stored = database.get_codes(model.id, order)
            position = {d: i for i, d in enumerate(stored_ids.tolist())}
            stored = stored[[position[d] for d in order.tolist()]]
            differ = int((stored != fresh.astype(stored.dtype)).any(axis=1).sum())
            out[model.name] = {"rows": len(order), "rows_differing": differ, "kind": model.kind,
                               "max_difference": float(np.abs(stored.astype(np.float64) - fresh).max())}
    return out


def identical(alike: dict) -> bool:
    return all(m["rows_differing"] == 0 if m["kind"] == "binary" else m["max_difference"] < 1e-5
               for m in alike.values())


# ------------------------------------------------------------------------ search
def queries(n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` 20 Newsgroups test posts with a label (texts, labels), seeded order."""
    test = [d for d in read_documents(NEWSGROUPS, "20news-bydate-test") if d.label]
    order = np.random.default_rng(0).permutation(len(test))[:n]
    return [test[i].text for i in order], [test[i].label for i in order]


def search_worker(spec: dict) -> dict:
    """In a process of its own (so each backend's environment is read fresh): latency and
    precision@100 of one database in the given modes."""
    import faiss
    import torch
    from semhash.index.search import SearchEngine

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    texts, labels = queries(spec["queries"])
    out = {}
    started = time.perf_counter()
    engine = SearchEngine(spec["db"]).warm()  # builds (or loads) the search structures
    out["open_s"] = round(time.perf_counter() - started, 2)
    out["open_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for run in spec["runs"]:
        options = {key: value for key, value in run.items() if key != "name"}
        started = time.perf_counter()
        engine.search(texts[0], k=K, **options)  # builds what the mode needs (cells, a sync)
        first = time.perf_counter() - started
        times, precision = [], []
        deadline = time.perf_counter() + RUN_SECONDS
        for text, label in zip(texts, labels):
            started = time.perf_counter()
            hits = engine.search(text, k=K, **options)
            times.append(time.perf_counter() - started)
            precision.append(sum(hit.label == label for hit in hits) / K)
            if started > deadline:  # a slow mode (an exact scan in PostgreSQL) gets fewer queries
                break
        times = np.array(times) * 1000
        out[run["name"]] = {"first_query_s": round(first, 2), "p50_ms": round(float(np.percentile(times, 50)), 2),
                            "p99_ms": round(float(np.percentile(times, 99)), 2), "queries": len(times),
                            "precision_at_100": round(float(np.mean(precision)), 4), **options}
    return out


def encoding_worker(spec: dict) -> dict:
    """Encoding alone (count the words, encode with every model), no reading or storing: the
    first ``documents`` of the corpus, held in memory, through the pipeline's own batches,
    in this one process (its default torch threads: both cores) and on a local Ray cluster
    of 2 workers (one thread each). Codes compared bit for bit."""

    from semhash.index.database import Database
    from semhash.index.models import load_model, load_vocabulary
    from semhash.pipelines.corpus import iter_corpus
    from semhash.pipelines.ray_encoding import ray_pool
    from semhash.pipelines.streaming import ENCODE_BATCH, BatchEncoder, LocalPool, Tally, encoded_batches, unstored_blocks

    with Database(spec["db"], create=False) as db:
        encoder = BatchEncoder(load_vocabulary(db), {m.name: load_model(db, m.name).model for m in db.list_models()})
    documents = list(iter_corpus(spec["corpus"], limit=spec["documents"], max_corpus_bytes=2**40))

    def encode(pool) -> tuple[float, dict]:
        started = time.perf_counter()
        codes = {name: [] for name in encoder.models}
        for _, batch in encoded_batches(unstored_blocks(documents, ENCODE_BATCH, Tally()), pool, Tally()):
            for name in codes:
                codes[name].append(batch[name])
        return time.perf_counter() - started, {name: np.concatenate(parts) for name, parts in codes.items()}

    one_s, one = encode(LocalPool(encoder))
    started = time.perf_counter()
    with ray_pool("local", encoder.to_state()) as pool:
        pool.get(pool.encode_texts(["warm up"]))
        startup = time.perf_counter() - started
        ray_s, two = encode(pool)
    return {"documents": len(documents), "one_process_s": round(one_s, 1), "ray_startup_s": round(startup, 1),
            "ray_2_workers_s": round(ray_s, 1), "speedup": round(one_s / ray_s, 2),
            "one_process_docs_per_s": round(len(documents) / one_s), "ray_docs_per_s": round(len(documents) / ray_s),
            "identical": all(np.array_equal(one[name], two[name]) for name in one)}


def search_run(db: str, runs: list[dict], n_queries: int, env: dict | None = None) -> dict:
    spec = {"db": db, "runs": runs, "queries": n_queries}
    log(f"search {db.split('@')[-1]} {env or ''}: {', '.join(r['name'] for r in runs)}")
    result = subprocess.run([sys.executable, __file__, "--search-worker", json.dumps(spec)], capture_output=True,
                            check=False, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"search of {db} failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def binary_runs(cells: bool, address: bool) -> list[dict]:
    runs = [{"name": "exhaustive", "mode": "exhaustive"}]
    if cells:
        runs += [{"name": f"cells p={p}", "mode": "cells", "probes": p} for p in PROBES_SWEEP]
    if address:
        runs.append({"name": "address", "mode": "address"})
    return runs


# ------------------------------------------------------------------------ servers
def server(name: str):
    """A server of the tests' helpers (``tests/servers.py``), started on 127.0.0.1 when needed."""
    sys.path.insert(0, str(REPO / "tests"))
    import servers

    log(f"starting {name.split('_')[0]} on 127.0.0.1")
    return getattr(servers, name)()


def milvus_bytes() -> int | None:
    """Disk bytes of the (one) Milvus server this script started, if any."""
    folders = sorted(TMP.glob("semhash-milvus-*"), key=lambda p: p.stat().st_mtime)
    return folder_bytes(folders[-1]) - folder_bytes(folders[-1] / "bin") if folders else None


# ------------------------------------------------------------------------ the run
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="collection sizes (default 100k 1M 10M; quick 20k 50k)")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "ray", "postgres", "milvus"])
    parser.add_argument("--queries", type=int, help="test posts timed one at a time (default 500; quick 100)")
    parser.add_argument("--work", type=Path, default=TMP / "semhash-scale", help="corpus, databases, measurements")
    parser.add_argument("--postgres", help="an existing PostgreSQL URL (its database is overwritten)")
    parser.add_argument("--milvus", help="an existing Milvus URI (milvus://HOST:PORT)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="forget earlier measurements in WORK")
    parser.add_argument("--update", type=Path, metavar="RESULTS_JSON",
                        help="put this run's rows of the --backends other than sqlite (and of the SQLite collections Milvus "
                             "searched) into an earlier run's results; the report lists what was measured again")
    parser.add_argument("--encoding-only", action="store_true",
                        help="measure encoding alone (one process against 2 Ray workers, the first 200,000 documents "
                             "of the corpus) with the models of --models-db; writes scale.encoding.{md,json}")
    parser.add_argument("--models-db", type=Path,
                        help="with --encoding-only: a text database whose models encode (default: the middle "
                             "size's SQLite database in WORK)")
    parser.add_argument("--search-worker", help=argparse.SUPPRESS)
    parser.add_argument("--encoding-worker", help=argparse.SUPPRESS)
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.search_worker:
        print(json.dumps(search_worker(json.loads(args.search_worker))))
        return
    if args.encoding_worker:
        print(json.dumps(encoding_worker(json.loads(args.encoding_worker))))
        return

    if args.encoding_only:
        args.sizes = args.sizes or [ENCODING_DOCUMENTS]
    sizes = sorted(args.sizes or ([20_000, 50_000] if args.quick else [100_000, 1_000_000, 10_000_000]))
    n_queries = args.queries or (100 if args.quick else 500)
    middle = sizes[-2] if len(sizes) > 1 else sizes[-1]  # the ray and PostgreSQL size (1M in a full run)
    args.work.mkdir(parents=True, exist_ok=True)
    measured = Measured(args.work / ("measured.quick.json" if args.quick else "measured.json"), args.fresh)
    corpus = args.work / f"corpus-{sizes[-1]}.jsonl"
    larger = sorted(args.work.glob("corpus-*.jsonl"), key=lambda p: int(p.stem.split("-")[1]))
    usable = [p for p in larger if int(p.stem.split("-")[1]) >= sizes[-1]]
    if usable:
        corpus = usable[0]  # a larger corpus's first lines are the smaller one
    else:
        log(f"writing the corpus of {sizes[-1]:,} documents to {corpus}")
        write_corpus(corpus, sizes[-1])

    result = {"sizes": sizes, "queries": n_queries, "index_options": INDEX_OPTIONS, "k": K,
              "corpus": f"{corpus.name}: 20 Newsgroups train posts, then perturbed copies (benchmarks/scale_corpus.py)",
              "index": {}, "search": {}}
    sqlite_db = {n: str(args.work / f"sqlite-{n}.db") for n in sizes}

    def sqlite(n: int) -> None:  # SQLite + FAISS: memory, rates, search
        result["index"][f"sqlite {n}"] = run = measured.get(
            f"index sqlite {n}", lambda: {**index_run(corpus, n, sqlite_db[n]), "storage_bytes": storage_bytes(sqlite_db[n])})
        run["bytes_per_document"] = round(run["storage_bytes"] / run["documents"])
        result["search"][f"sqlite {n}"] = measured.get(
            f"search sqlite {n}", lambda: search_run(sqlite_db[n], binary_runs(True, True), n_queries))

    def encoding(db: str | None = None) -> dict:  # encoding alone, one process against 2 Ray workers, in a process of its own
        spec = {"db": db or sqlite_db[middle], "corpus": str(corpus), "documents": min(middle, ENCODING_DOCUMENTS)}
        log(f"encoding {spec['documents']:,} documents: one process, then 2 Ray workers")
        done = subprocess.run([sys.executable, __file__, "--encoding-worker", json.dumps(spec)], capture_output=True,
                              check=False, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the encoding measurement failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def ray() -> dict:  # the middle size's index again, encoded on 2 Ray workers
        ray_db = str(args.work / f"ray-{middle}.db")
        run = index_run(corpus, middle, ray_db, ["--ray"])
        run["codes_vs_one_process"] = alike = encoded_alike(ray_db, corpus)
        run["identical"] = identical(alike)
        return run

    def postgres() -> dict:  # index and search in one go: the server is a temporary one
        with ExitStack() as stack:
            url = args.postgres or stack.enter_context(server("postgres_server"))
            run = index_run(corpus, middle, url)
            run["storage_bytes"] = storage_bytes(url)
            run["bytes_per_document"] = round(run["storage_bytes"] / run["documents"])
            return {"index": run, "search": search_run(url, binary_runs(True, False), n_queries),
                    "faiss": search_run(url, binary_runs(False, False), n_queries, {"SEMHASH_PGVECTOR": "off"})}

    def milvus(n: int) -> dict:  # the SQLite collection's codes, copied by the first search
        with ExitStack() as stack:
            uri = args.milvus or stack.enter_context(server("milvus_server"))
            search = search_run(sqlite_db[n], binary_runs(True, True), n_queries, {"SEMHASH_CODES": uri})
            return {**search, "server_bytes": None if args.milvus else milvus_bytes()}

    if args.encoding_only:
        models = str(args.models_db or sqlite_db[middle])
        result = {"encoding": {**encoding(models), "models_db": models, "corpus": result["corpus"]}, "code": code_state()}
        paths = write_results(args.out, "scale.encoding", result, encoding_markdown(result))
        print(encoding_markdown(result))
        log(f"wrote {', '.join(str(p) for p in paths.values())}")
        return

    # Smaller sizes first, then the middle size's other backends, then the largest size.
    for n in sizes[:-1]:
        sqlite(n)
    if "ray" in args.backends:
        result["encoding"] = measured.get(f"encoding {middle}", encoding)
        result["index"][f"ray {middle}"] = measured.get(f"index ray {middle}", ray)
    if "postgres" in args.backends:
        pg = measured.get(f"postgres {middle}", postgres)
        result["index"][f"postgres {middle}"] = pg["index"]
        result["search"][f"postgres {middle}"] = pg["search"]
        result["search"][f"postgres {middle} faiss"] = pg["faiss"]
    sqlite(sizes[-1])
    if "milvus" in args.backends:
        for n in sorted({middle, sizes[-1]}):
            result["search"][f"milvus {n}"] = measured.get(f"search milvus {n}", lambda n=n: milvus(n))

    if args.update:  # an earlier full run, with this run's rows of the other backends in place of its own
        result, sizes, middle = updated(json.loads(args.update.read_text()), result, args.backends,
                                        measured.measured_now)
    result["summary"] = summarize(result, sizes, middle)
    result["environment"] = result.get("environment") if args.update else environment()
    paths = write_results(args.out, "scale.quick" if args.quick else "scale", result, markdown(result))
    plot(result, sizes, args.out / ("scale.quick.png" if args.quick else "scale.png"))
    print(markdown(result))
    log(f"wrote {', '.join(str(p) for p in paths.values())}")


def updated(earlier: dict, run: dict, backends: list[str], measured_now: set[str]) -> tuple[dict, list[int], int]:
    """``earlier`` (a full run's results) with ``run``'s rows of ``backends`` other than
    sqlite put in, and the search rows of the SQLite collections Milvus searched. Those of
    them measured by this run (``measured_now``; the others were read back from its work
    folder) are listed under ``updates`` with the date and the code, and taken off the
    lists of earlier updates; the report shows the lists."""
    rows = []
    for section in ("index", "search"):
        for name, value in run[section].items():
            if name.split(" ")[0] in backends and not name.startswith("sqlite"):
                earlier[section][name] = value
                rows.append(f"{section} {name}")
    # Milvus searches the SQLite collection of its size, which this run indexed anew: its
    # search rows come along, so that Milvus's precision is compared with the exhaustive
    # search of the same codes (its index row stays: the Ray run is compared with that one).
    measured = {name.split(" ")[1] for name, runs in run["search"].items()
                if name.startswith("milvus ") and "not_measured" not in runs}
    for size in sorted(measured if "milvus" in backends else ()):
        if f"sqlite {size}" in run["search"]:
            earlier["search"][f"sqlite {size}"] = run["search"][f"sqlite {size}"]
            rows.append(f"search sqlite {size}")
    if "ray" in backends and "encoding" in run:
        earlier["encoding"] = run["encoding"]
        rows.append("encoding")
    # rows are named as their measurements are kept, but for the encoding (kept by its size)
    now = [row for row in rows if row in measured_now
           or (row == "encoding" and any(key.startswith("encoding ") for key in measured_now))]
    updates = [dict(u, rows=[r for r in u["rows"] if r not in now]) for u in earlier.get("updates", [])]
    earlier["updates"] = [u for u in updates if u["rows"]]
    if now:
        env = environment()
        earlier["updates"].append({"rows": now, "date": env["date"], "code": code_state(),
                                   "environment": environment_line(env)})
    sizes = earlier["sizes"]
    return earlier, sizes, sizes[-2] if len(sizes) > 1 else sizes[-1]


# ------------------------------------------------------------------------ reporting
def _ratio(search: dict, baseline: dict, name: str) -> float | None:
    if name not in search or "exhaustive" not in baseline:
        return None
    return round(search[name]["precision_at_100"] / baseline["exhaustive"]["precision_at_100"], 3)


def summarize(result: dict, sizes: list[int], middle: int) -> dict:
    index, search = result["index"], result["search"]
    memory = [index[f"sqlite {n}"]["peak_rss_mb"] for n in sizes]
    summary = {"memory_growth": round(max(memory) / memory[0], 2),
               "memory_mb": dict(zip(map(str, sizes), memory))}
    if f"ray {middle}" in index and "encoding" in result:
        one, ray, alone = index[f"sqlite {middle}"], index[f"ray {middle}"], result["encoding"]
        summary["ray"] = {"encode_speedup": alone["speedup"], "identical": alone["identical"] and ray["identical"],
                          "index_encode_stage_speedup": round(one["seconds"]["encode"] / ray["seconds"]["encode"], 2),
                          "index_wall_speedup": round(one["wall_s"] / ray["wall_s"], 2),
                          "per_worker_docs_per_s": round(alone["ray_docs_per_s"] / 2)}
    pg = search.get(f"postgres {middle}")
    if pg:
        base = search[f"postgres {middle} faiss"]
        summary["postgres"] = {name: {"p50_ms": run["p50_ms"], "ratio": _ratio(pg, base, name)}
                               for name, run in pg.items() if isinstance(run, dict)}
    for n in sorted({middle, sizes[-1]}):
        mv = search.get(f"milvus {n}")
        if mv:
            base = search[f"sqlite {n}"]
            summary[f"milvus {n}"] = {name: {"p50_ms": run["p50_ms"], "ratio": _ratio(mv, base, name)}
                                      for name, run in mv.items() if isinstance(run, dict)}
    if "ray" in summary:  # a projection, not a measurement: see markdown()
        worker = summary["ray"]["per_worker_docs_per_s"]
        summary["projection"] = {
            "per_worker_docs_per_s": worker,
            "encode_minutes_10M": {str(w): round(1e7 / (w * worker) / 60, 1) for w in (2, 16, 64, 256)},
            "writer_docs_per_s": round(index[f"sqlite {sizes[-1]}"]["documents"] / index[f"sqlite {sizes[-1]}"]["seconds"]["store"]),
        }
    return summary


def markdown(result: dict) -> str:
    index, search, summary = result["index"], result["search"], result["summary"]
    lines = ["# Scale: index and search from 100k to 10M documents", "",
             (f"Corpus: {result['corpus']}. Index settings (every run): `{' '.join(result['index_options'])}`. "
              f"Search: {result['queries']} 20 Newsgroups test posts one at a time, k={result['k']}, one thread."), "",
             "## Indexing", "",
             "| run | documents | wall | peak memory | encode | documents/s (encode) | documents/s (all) | bytes/document |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, run in index.items():
        lines.append(f"| {name} | {run['documents']:,} | {run['wall_s']:.0f} s | {run['peak_rss_mb']:.0f} MB | "
                     f"{run['seconds'].get('encode', 0):.0f} s | {run['encode_docs_per_s']:,} | {run['docs_per_s']:,} | "
                     f"{run.get('bytes_per_document', '')} |")
    if "encoding" in result:
        lines += ["", encoding_paragraph(result["encoding"])]
    lines += ["", "Stages (seconds, from each run's `--json` report; `encode` is the time the writer waited for "
              "encoded batches, reading included):", ""]
    for name, run in index.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in run["seconds"].items()))
    lines += ["", "## Search (k=100)", "",
              "| backend | size | mode | first query | p50 | p99 | precision@100 | vs exhaustive FAISS, same codes |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, runs in search.items():
        backend, size = name.split(" ")[0], int(name.split(" ")[1])
        base = search.get(f"postgres {size} faiss") if backend == "postgres" else search.get(f"sqlite {size}")
        label = backend + (" (local FAISS)" if name.endswith("faiss") else "")
        if "not_measured" in runs:
            lines.append(f"| {label} | {size:,} | not measured: {runs['not_measured']} | | | | | |")
        for mode, run in runs.items():
            if not isinstance(run, dict):
                continue
            ratio = _ratio(runs, base, mode) if base else None
            lines.append(f"| {label} | {size:,} | {mode} | {run['first_query_s']:.1f} s | {run['p50_ms']:.1f} ms | "
                         f"{run['p99_ms']:.1f} ms | {run['precision_at_100']:.3f} | {ratio if ratio is not None else ''} |")
    lines += ["", "Opening each collection for search (models, and the search structures: loaded, built when "
              "missing, or copied to Milvus), and the search process's peak memory:", ""]
    for name, runs in search.items():
        if "open_s" in runs:
            lines.append(f"- {name}: {runs['open_s']:.1f} s, {runs.get('open_peak_rss_mb', 0):.0f} MB")
    for update in result.get("updates", []):
        commit = (update.get("code") or {}).get("commit", "")
        lines += ["", f"Measured again on {update['date']} (code {commit[:7]}): {', '.join(update['rows'])}; "
                      f"every other row as first measured. {update['environment']}"]
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    for target, measured, ok in targets(result):
        lines.append(f"| {target} | {measured} | {'pass' if ok else 'miss'} |")
    if "projection" in summary:
        p = summary["projection"]
        lines += ["", "## Projection (not measured: no cluster here)", "",
                  f"From the measured encoding rate of one Ray worker ({p['per_worker_docs_per_s']:,} documents/s, "
                  "half of the 2-worker rate), minutes to encode 10M documents with W workers, if the writer keeps up: "
                  + ", ".join(f"W={w}: {m} min" for w, m in p["encode_minutes_10M"].items())
                  + f". One writer stores documents and codes: at its measured {p['writer_docs_per_s']:,} documents/s (SQLite, "
                  f"the largest run) 10M take {1e7 / p['writer_docs_per_s'] / 60:.1f} min whatever the number of workers."]
    return "\n".join(lines)  # write_results ends it with the environment line


def encoding_paragraph(e: dict) -> str:
    return (f"Encoding alone (count and encode {e['documents']:,} documents held in memory, the pipeline's "
            f"batches, nothing read or stored): one process {e['one_process_s']} s "
            f"({e['one_process_docs_per_s']:,} documents/s, both cores through torch's threads); 2 Ray workers "
            f"{e['ray_2_workers_s']} s ({e['ray_docs_per_s']:,} documents/s; cluster start {e['ray_startup_s']} s, "
            f"not counted): {e['speedup']}x; codes identical: {e['identical']}. In a whole `index` run the "
            "reading and the storing stay in the one writing process (Ray's actors take the counting and "
            "encoding), which bounds its gain.")


def encoding_markdown(result: dict) -> str:
    """``--encoding-only``: the encoding measurement alone, with its target."""
    e, code = result["encoding"], result["code"]
    met = e["speedup"] >= 1.6 and e["identical"]
    return "\n".join([
        "# Scale: encoding on 2 Ray workers against one process", "",
        f"Corpus: {e['corpus']}. Models: those of `{e['models_db']}`. Code: commit {code['commit']}"
        + (f", with uncommitted changes in {', '.join(code['changed'])}" if code["changed"] else "") + ".", "",
        encoding_paragraph(e), "",
        "| target | measured | |", "|---|---|---|",
        f"| Ray, 2 workers >= 1.6x one process on 2 cores; codes identical | {e['speedup']}x; identical: "
        f"{e['identical']} | {'pass' if met else 'miss'} |"])


def targets(result: dict) -> list[tuple[str, str, bool]]:
    sizes, summary = result["sizes"], result["summary"]
    middle = sizes[-2] if len(sizes) > 1 else sizes[-1]
    out = [(f"peak memory of index flat (<= 1.5x) from {sizes[0]:,} to {sizes[-1]:,}",
            f"{summary['memory_growth']}x ({', '.join(f'{v:.0f} MB' for v in summary['memory_mb'].values())})",
            summary["memory_growth"] <= 1.5)]
    if "ray" in summary:
        r = summary["ray"]
        out.append(("Ray, 2 workers: encoding >= 1.6x one process; codes identical",
                    f"{r['encode_speedup']}x encoding alone; identical: {r['identical']} (whole `index` run: "
                    f"{r['index_wall_speedup']}x, its encoding stage {r['index_encode_stage_speedup']}x)",
                    r["encode_speedup"] >= 1.6 and r["identical"]))
    pg = summary.get("postgres", {})
    cell = pg.get(f"cells p={DEFAULT_PROBES}")
    if cell:
        out.append((f"PostgreSQL + pgvector at {middle:,}: p50 < 20 ms keeping >= 0.95 of exhaustive precision@100",
                    f"IVFFlat, probes {DEFAULT_PROBES}: {cell['p50_ms']} ms, {cell['ratio']}",
                    cell["p50_ms"] < 20 and (cell["ratio"] or 0) >= 0.95))
    measured_sizes = [n for n in sizes if summary.get(f"milvus {n}")]
    if measured_sizes:  # the largest size measured in Milvus
        n = measured_sizes[-1]
        best = [(name, run) for name, run in summary[f"milvus {n}"].items() if (run["ratio"] or 0) >= 0.95]
        name, run = min(best, key=lambda item: item[1]["p50_ms"])
        out.append(("Milvus at 10M (or the largest size measured): p50 < 10 ms",
                    f"at {n:,}, {name}: {run['p50_ms']} ms (precision ratio {run['ratio']})", run["p50_ms"] < 10))
    return out


def plot(result: dict, sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index, search = result["index"], result["search"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(sizes, [index[f"sqlite {n}"]["peak_rss_mb"] for n in sizes], "o-", label="index, SQLite")
    axes[0].set(xscale="log", xlabel="documents", ylabel="peak memory (MB)", title="Memory of `semhash index`")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(sizes, [index[f"sqlite {n}"]["encode_docs_per_s"] for n in sizes], "o-", label="1 process")
    for name, run in index.items():
        if not name.startswith("sqlite"):
            axes[1].plot([run["size"]], [run["encode_docs_per_s"]], "s", label=name.split(" ")[0])
    axes[1].set(xscale="log", xlabel="documents", ylabel="documents/s", title="Encoding rate")
    axes[1].legend()
    for name, runs in search.items():
        points = [(run["precision_at_100"], run["p50_ms"], mode) for mode, run in runs.items() if isinstance(run, dict)]
        axes[2].scatter([p[1] for p in points], [p[0] for p in points], label=name)
    axes[2].set(xscale="log", xlabel="p50 latency (ms)", ylabel="precision@100", title="Search, k=100")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
