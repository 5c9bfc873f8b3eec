"""Load test of ``semhash serve``: latency, throughput and errors under concurrent clients,
and freshness while ``semhash add`` writes into the same database.

A bounded test on 127.0.0.1 against a copy of a text database (the 20 Newsgroups train
posts; the original is never touched: the ``.db`` file and its ``.faiss`` folder are copied
into a temporary folder). The load is a seeded mix of 80% ``GET /api/search?q=...`` (by
text) and 20% ``GET /api/similar/{id}`` (random stored ids), k=10. Search queries are
20 Newsgroups *test* posts as a user might type them: the subject line (``Re:`` dropped)
and the first ~20 words of the body (quoted lines skipped), so no two are alike; queries
with no word of the collection's vocabulary (the server answers 400) are left out.

Scenarios (the machine has 2 cores):

* ``1 core``: ``semhash serve`` (1 worker) pinned with ``taskset -c 0``, the load
  generator on core 1; 1, 8 and 64 concurrent clients; at 8 clients also a search-only
  run, a paced run (each client pauses an exponential think time, mean 80 ms, between
  requests: latency below saturation), and ``/api/health`` (a trivial endpoint: the
  ceiling of the HTTP stack, and the client's own cost per request);
* ``2 cores``: ``--workers 2``, unpinned, at 8 and 64 clients (and ``/api/health``): the
  load generator shares the cores with the server, so its own CPU time is reported;
* ``2 cores, OMP_NUM_THREADS=1`` (diagnostic, ``two1``): the same with one thread in each
  worker's OpenMP/BLAS pools (torch, FAISS), to show what oversubscribed pools cost;
* ``add``: the 1-core server and 8 clients while ``semhash add FILE --db COPY`` (a
  subprocess pinned to core 1 with the load generator) writes 5,000 test posts (new ids) in
  its default batches of 2,000. Counted: failed reads (non-200 answers, bodies that are not
  hits, connection errors), and, for the added documents, the delay between the commit of
  their codes (seen by polling the copy read-only every 50 ms: new rows of the long-code
  model in table ``codes``) and the moment the server's search index holds them: three
  documents of each commit (first, last, one at random) are probed, each on its own
  connection, every 50 ms with ``GET /api/search?code=<its hex code>&k=10`` (an exhaustive
  search of the server's loaded index, which finds a stored code at distance 0;
  ``/api/similar/{id}`` would not prove it, it reads the code from the database). After the
  load, every added document is checked once the same way.

The load generator is one asyncio process (uvloop when installed) with one raw keep-alive
HTTP/1.1 connection per client, closed-loop (a client sends its next request when the
answer to the previous one has arrived), a fixed number of requests per client after a
short warm-up (at most 60 s a run; the add scenario: until the writes are done and
visible). A request on a kept-alive connection that the server closed while it was idle is
sent again on a new one, as HTTP clients do (counted apart, not an error). Latency: from
writing the request to reading the whole body. Throughput: measured requests over the wall
time of the measured phase. CPU: the client's own process time, the server's (its process
tree, from ``/proc``), both per request, and the rest of the machine's (``/proc/stat``: on a
shared machine, other users' load). ``--profile DIR`` repeats the 8-client runs under
``py-spy record`` (not in the figures) and keeps a summary of the server's stacks.

Usage::

    python benchmarks/serve_load.py --db /tmp/srv/news.db          # full: serve_load.{md,json}
    python benchmarks/serve_load.py --db /tmp/srv/small.db --quick  # smoke run: serve_load.quick.*

Timings on a shared 2-core machine are noisy; compare figures within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import NEWSGROUPS, add_out_argument, code_state, log, read_documents, write_results

try:  # a cheaper event loop for the client, when installed (uvicorn[standard] brings it)
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HOST = "127.0.0.1"
K = 10
SEARCH_SHARE = 0.8
QUERY_WORDS = 20
PROBE_K = 10  # hits asked for by a probe (1000 when the top PROBE_K are all ties at distance 0)
PROBE_INTERVAL = 0.05  # seconds between looks at the database and between freshness probes
PROBES_PER_BATCH = 3  # committed documents probed per commit: its first, its last, one at random
FRESHNESS_TIMEOUT = 60.0  # after the add ends, wait at most this long for the last probes
LONG_MODEL = "hasher"  # semhash.index.models.TEXT.long

# (clients, requests per client): 1,000-2,560 measured requests a run, 5-20 s at 150-450 req/s
FULL_RUNS = {1: 1000, 8: 250, 64: 40}
QUICK_RUNS = {1: 100, 8: 30, 64: 4}
HEALTH_REQUESTS = {False: 500, True: 60}  # per client at 8 clients (a quarter of it at 64)
WARMUP_PER_CLIENT = 3
MAX_RUN_SECONDS = 60.0  # a run stops here even when its clients have requests left (a slow server)
# Paced run: 8 clients each pausing a random (exponential) think time between requests,
# ~100 requests/s offered in all: latency below saturation.
THINK_SECONDS = 0.08
PACED_REQUESTS = {False: 150, True: 15}  # per client

# Diagnostic: the server's processes with one thread in their OpenMP/BLAS pools (torch, FAISS).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ONE_THREAD_SCENARIO = "2 cores, OMP_NUM_THREADS=1"

TARGETS = {"p50_ms": 5.0, "p99_ms": 25.0, "rps_2_cores": 500.0, "fresh_s": 5.0}


# ----------------------------------------------------------------------------- queries
def query_text(doc) -> str:
    """A query as a user might type it: the subject line and the first words of the body."""
    subject = re.sub(r"^(re:\s*)+", "", (doc.title or "").strip(), flags=re.I)
    text = doc.text or ""
    body = text.split("\n\n", 1)[1] if "\n\n" in text else text
    lines = [line for line in body.splitlines()
             if line.strip() and not line.lstrip().startswith((">", "|", ":"))
             and not re.match(r"\s*(in article|.{0,80}\bwrites:\s*$|.{0,80}\bwrote:\s*$)", line, flags=re.I)]
    words = " ".join(lines).split()[:QUERY_WORDS]
    return " ".join([subject, *words]).strip()


def search_path(text: str) -> str:
    return f"/api/search?q={urllib.parse.quote_plus(text)}&k={K}"


def similar_path(doc_id: int) -> str:
    return f"/api/similar/{doc_id}?k={K}"


def request_mix(queries: list[str], ids: list[int], n: int, rng: random.Random,
                search_share: float = SEARCH_SHARE) -> list[tuple[str, str]]:
    """``n`` seeded ``(kind, path)`` requests: ``search_share`` searches by text, the rest similar."""
    out = []
    for _ in range(n):
        if rng.random() < search_share:
            out.append(("search", search_path(rng.choice(queries))))
        else:
            out.append(("similar", similar_path(rng.choice(ids))))
    return out


# ----------------------------------------------------------------------------- HTTP client
def http_get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """``(status, body)`` of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        return status, await reader.readexactly(int(lower[at + 17 : end]))
    if b"transfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, b""


class Connection:
    """One keep-alive connection; reconnects after a failure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = self.writer = None
        self.stale = 0

    async def get(self, request: bytes) -> tuple[int, bytes]:
        """One request. As HTTP clients do, a request on a reused connection that the server
        closed before answering (an idle keep-alive connection past uvicorn's timeout) is sent
        once more on a fresh connection; such retries are counted in ``stale``."""
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        try:
            self.writer.write(request)
            return await read_response(self.reader)
        except asyncio.IncompleteReadError as err:
            self.close()
            if not (reused and not err.partial):
                raise
        except BaseException:
            self.close()
            raise
        self.stale += 1
        return await self.get(request)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Records:
    """Per measured request: kind, ok, latency (s), completion time (perf_counter)."""

    kinds: list = field(default_factory=list)
    ok: list = field(default_factory=list)
    latency: list = field(default_factory=list)
    done: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)
    stale_retries: int = 0

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1


WARMUP_FAILURES: dict[str, int] = {}  # warm-up requests that failed (reported, not measured)


def body_ok(kind: str, body: bytes) -> bool:
    return kind == "health" or body.startswith(b'{"hits": [')


async def one_request(conn: Connection, kind: str, request: bytes, records: Records | None) -> None:
    started = time.perf_counter()
    try:
        status, body = await conn.get(request)
        ok = status == 200 and body_ok(kind, body)
        why = None if ok else (f"HTTP {status}" if status != 200 else "unexpected body")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as err:
        ok, why = False, type(err).__name__
    finished = time.perf_counter()
    if records is not None:
        records.kinds.append(kind)
        records.ok.append(ok)
        records.latency.append(finished - started)
        records.done.append(finished)
        if why:
            records.fail(why)
    elif why:
        WARMUP_FAILURES[why] = WARMUP_FAILURES.get(why, 0) + 1


async def client(port: int, warmup: list, measured: list, records: Records, ready: asyncio.Barrier,
                 stop: asyncio.Event | None, think: float = 0.0, seed: int = 0,
                 cap: asyncio.Event | None = None) -> None:
    """One closed-loop client; ``think``: mean of an exponential pause (s) after each answer;
    ``cap``: set when the run's time is up (the client stops before its last requests)."""
    conn = Connection(port)
    pause = random.Random(seed)
    try:
        try:
            for kind, request in warmup:
                await one_request(conn, kind, request, None)
        finally:
            await ready.wait()  # every client, even one that failed, lets the others start
            conn.stale = 0  # count the measured phase's only
        if stop is None:
            for kind, request in measured:
                if cap is not None and cap.is_set():
                    break
                if think:
                    await asyncio.sleep(pause.expovariate(1.0 / think))
                await one_request(conn, kind, request, records)
        else:  # until told to stop, cycling through the requests
            i = 0
            while not stop.is_set():
                kind, request = measured[i % len(measured)]
                await one_request(conn, kind, request, records)
                i += 1
    finally:
        records.stale_retries += conn.stale
        conn.close()


async def drive(port: int, plans: list[tuple[list, list]], stop: asyncio.Event | None = None,
                during=None, server_cpu=lambda: 0.0, think: float = 0.0, max_seconds: float | None = None) -> dict:
    """Run one closed-loop client per plan ``(warm-up, measured)``; ``during``: a coroutine
    function started with the measured phase (it may set ``stop``). ``server_cpu()``: the
    server's CPU seconds so far, read at the start and the end of the measured phase."""
    records = Records()
    ready = asyncio.Barrier(len(plans) + 1)
    cap = asyncio.Event()
    tasks = [asyncio.create_task(client(port, w, m, records, ready, stop, think, seed, cap))
             for seed, (w, m) in enumerate(plans)]
    await ready.wait()
    if max_seconds:
        asyncio.get_running_loop().call_later(max_seconds, cap.set)
    server_started, busy = server_cpu(), busy_seconds()
    cpu, started = time.process_time(), time.perf_counter()
    side = asyncio.create_task(during()) if during else None
    try:
        await asyncio.gather(*tasks)
        side_result = await side if side else None
    finally:
        for task in [*tasks, *([side] if side else [])]:
            task.cancel()
    wall, client_cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"records": records, "started": started, "wall": wall, "client_cpu": client_cpu,
            "server_cpu": server_cpu() - server_started, "machine_cpu": busy_seconds() - busy, "side": side_result,
            "capped": cap.is_set() and sum(len(m) for _, m in plans) > len(records.latency)}


def encode_plan(plan: list[tuple[str, str]], port: int) -> list[tuple[str, bytes]]:
    return [(kind, http_get(path, port)) for kind, path in plan]


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in process_tree(pid):
        try:
            fields_ = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields_[11]) + int(fields_[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def busy_seconds() -> float:
    """CPU seconds spent by all processes on the machine (every core; /proc/stat): with
    the server's and the client's own, tells how much other processes took during a run."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait; steal (8th) is not counted
    return (sum(values[:7]) - idle) / os.sysconf("SC_CLK_TCK")


def semhash_command() -> list[str]:
    script = Path(sys.executable).with_name("semhash")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from semhash.cli import main; main()"]


def pinned(command: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus and shutil.which("taskset") else command


class Server:
    """``semhash serve`` in its own process group, on a free port; stopped on exit."""

    def __init__(self, db: Path, *, workers: int, cpus: str | None, folder: Path, env: dict | None = None,
                 ready_timeout: float = 300.0) -> None:
        self.port = free_port()
        self.log_path = folder / f"serve-{self.port}.log"
        command = pinned([*semhash_command(), "serve", "--db", str(db), "--host", HOST, "--port", str(self.port),
                          "--workers", str(workers)], cpus)  # not -q: the log counts reloads and worker restarts
        self.workers, self.cpus = workers, cpus
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env)
        started = time.perf_counter()
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started

    def _wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                restarts = f" ({self.worker_restarts()} workers died and were restarted)" if self.worker_restarts() else ""
                raise RuntimeError(f"the server did not answer /api/health in {timeout:.0f}s{restarts}:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as sock:
                    sock.sendall(http_get("/api/health", self.port))
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            time.sleep(0.2)
        # Several workers: each loads the collection itself; wait until all are up and idle
        # (below 15% of a core for two seconds running: the reload threads poll meanwhile).
        settled, last = 0, cpu_seconds(self.proc.pid)
        deadline = min(deadline, time.monotonic() + 90)
        while settled < 2 and time.monotonic() < deadline:
            time.sleep(1.0)
            now = cpu_seconds(self.proc.pid)
            workers_up = len(process_tree(self.proc.pid)) >= (1 if self.workers == 1 else self.workers + 1)
            settled = settled + 1 if now - last < 0.15 and workers_up else 0
            last = now

    def idle_cpu(self, seconds: float) -> float:
        """The server's CPU use while nobody asks anything (its reload polling), in cores."""
        before = self.cpu()
        time.sleep(seconds)
        return (self.cpu() - before) / seconds

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0

    def worker_restarts(self) -> int:
        """Workers uvicorn's supervisor found dead (or unresponsive) and replaced."""
        try:
            return len(re.findall(r"Child process \[\d+\] died", self.log_path.read_text(errors="replace")))
        except OSError:
            return 0

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()


class Profiler:
    """``py-spy record`` of a server's processes during one run (sampling, not pausing
    them), pinned to the client's core; :meth:`stop` returns a summary of the stacks."""

    def __init__(self, server: Server, name: str, rate: int = 250) -> None:
        self.path = PROFILE["folder"] / (re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") + ".collapsed.txt")
        command = pinned(["py-spy", "record", "--pid", str(server.proc.pid), "--subprocesses", "--nonblocking",
                          "--rate", str(rate), "--format", "raw", "--output", str(self.path)], "1")
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        time.sleep(1.5)  # attached before the load starts

    def stop(self) -> dict | None:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, errors = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        if not self.path.exists():
            log(f"py-spy wrote nothing: {errors.decode(errors='replace')[-300:]}")
            return None
        return summarise_profile(self.path)


def summarise_profile(path: Path, top: int = 25) -> dict:
    """Inclusive and self shares of the sampled stacks (py-spy's raw, collapsed format)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \((.*?)/([^/]+)\)$", r" (\2)", f) for f in stack.split(";")]
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]
        for frame in set(frames[1:]):  # the first frame is the process/thread
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    share = lambda d: [(k, round(v / total, 3)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]  # noqa: E731
    parts = {}
    for label, names in PROFILE_PARTS:
        frames = [f for f in inclusive if any(f.startswith(name + " (") for name in names)]
        # a part's frames may nest (transform_real inside search_input): the outermost counts
        parts[label] = round(max((inclusive[f] for f in frames), default=0) / max(total, 1), 3)
    return {"samples": total, "file": path.name, "parts": parts, "inclusive": share(inclusive), "self": share(own)}


# Where a request's time goes: (label, frames whose inclusive share it is; the largest counts).
PROFILE_PARTS = (
    ("HTTP + ASGI + FastAPI, whole requests", ("RequestResponseCycle.run_asgi",)),
    ("endpoint functions", ("run_endpoint_function",)),
    ("request parameters to models (FastAPI/pydantic)", ("solve_dependencies",)),
    ("query text to word counts", ("SearchEngine.word_counts",)),
    ("word counts to code (torch encoder)", ("DeepCodeModel.transform_real", "SemanticHasher.transform")),
    ("FAISS search", ("_CodeIndex.search", "IndexBinaryIDMap.search")),
    ("hits: documents from SQLite (or cache)", ("SearchEngine._stored_hits", "DocumentStore.get_documents")),
    ("similar: find the document", ("DocumentStore.find_document",)),
    ("similar: its stored code", ("SearchEngine._stored_code", "CodeStore.get_codes")),
    ("hits to JSON", ("_hits",)),
    ("sending the response", ("Response.__call__",)),
    ("reload thread: polling the revision", ("LiveCollection._poll",)),
)


# ----------------------------------------------------------------------------- figures
def percentiles(values, scale: float = 1e3) -> dict:
    if not len(values):
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    a = np.asarray(values) * scale
    return {"n": int(len(a)), "p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2),
            "mean_ms": round(float(a.mean()), 2)}


def summarise(name: str, scenario: str, clients: int, mix: str, run: dict, server_cpu: float) -> dict:
    rec: Records = run["records"]
    n = len(rec.latency)
    lat = np.asarray(rec.latency)
    kinds = np.asarray(rec.kinds)
    row = {
        "name": name, "scenario": scenario, "clients": clients, "mix": mix, "requests": n,
        "errors": int(n - sum(rec.ok)), "failures": dict(rec.failures), "stale_keepalive_retries": rec.stale_retries,
        **{k: v for k, v in percentiles(lat).items() if k != "n"},
        "rps": round(n / run["wall"], 1) if run["wall"] > 0 else None, "wall_s": round(run["wall"], 2),
        "client_cpu_s": round(run["client_cpu"], 2),
        "client_cpu_share": round(run["client_cpu"] / run["wall"], 3) if run["wall"] > 0 else None,
        "client_us_per_request": round(run["client_cpu"] / max(n, 1) * 1e6, 1),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_request": round(server_cpu / max(n, 1) * 1e3, 3),
        # requests per second of server CPU: the rate one fully available core would give
        "rps_per_server_core": round(n / server_cpu, 1) if server_cpu > 0 else None,
        "by_kind": {kind: percentiles(lat[kinds == kind]) for kind in sorted(set(rec.kinds))},
        # CPU of everything else on the machine meanwhile, in cores (other users, the add process)
        "other_cores": round(max(0.0, run["machine_cpu"] - run["client_cpu"] - server_cpu) / run["wall"], 2)
        if run["wall"] > 0 else None,
    }
    return row


def timeline(run: dict, bucket: float = 1.0) -> list[dict]:
    """Per ``bucket`` seconds of the measured phase: requests, failures, p50 and p99 (ms)."""
    rec: Records = run["records"]
    if not rec.done:
        return []
    done = np.asarray(rec.done) - run["started"]
    lat, ok = np.asarray(rec.latency), np.asarray(rec.ok)
    slots = (done // bucket).astype(int)
    out = []
    for s in range(int(slots.max()) + 1):
        sel = slots == s
        out.append({"t": round(s * bucket, 1), "requests": int(sel.sum()), "errors": int((~ok[sel]).sum()),
                    "p50_ms": round(float(np.percentile(lat[sel], 50)) * 1e3, 1) if sel.any() else None,
                    "p99_ms": round(float(np.percentile(lat[sel], 99)) * 1e3, 1) if sel.any() else None,
                    "max_ms": round(float(lat[sel].max()) * 1e3, 1) if sel.any() else None})
    return out


# ----------------------------------------------------------------------------- the collection
def copy_database(source: Path, folder: Path) -> Path:
    target = folder / source.name
    shutil.copy2(source, target)
    for suffix in ("-wal", "-shm", "-journal"):
        extra = source.with_name(source.name + suffix)
        if extra.exists():
            shutil.copy2(extra, target.with_name(target.name + suffix))
    faiss = source.with_name(source.name + ".faiss")
    if faiss.is_dir():
        shutil.copytree(faiss, target.with_name(target.name + ".faiss"))
    return target


def read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, check_same_thread=False)


def encodable(queries: list[str], db: Path) -> list[str]:
    """The queries with at least one word of the collection's vocabulary (the others are
    refused with 400: nothing to encode)."""
    from semhash.index.database import Database
    from semhash.index.models import load_vocabulary

    with Database(db, create=False) as database:
        vocabulary = load_vocabulary(database)
    counts = vocabulary.transform(queries)
    keep = np.diff(counts.tocsr().indptr) > 0
    return [q for q, k in zip(queries, keep) if k]


def collection_facts(db: Path) -> dict:
    with read_only(db) as conn:
        model_id, n_dims = conn.execute("SELECT id, n_dims FROM models WHERE name = ?", (LONG_MODEL,)).fetchone()
        ids = [row[0] for row in conn.execute("SELECT document_id FROM codes WHERE model_id = ? ORDER BY document_id",
                                              (model_id,))]
        external = {row[0] for row in conn.execute("SELECT external_id FROM documents")}
    return {"model_id": model_id, "bits": n_dims, "ids": ids, "external_ids": external}


class CommitWatcher(threading.Thread):
    """Polls the database copy (read-only) every ``interval`` s for new codes of the long
    model: ``batches`` is a list of ``(seen_at, [(document_id, hex code), ...])``."""

    def __init__(self, db: Path, model_id: int, after_id: int, interval: float = PROBE_INTERVAL) -> None:
        super().__init__(name="commit-watcher", daemon=True)
        self.db, self.model_id, self.last = db, model_id, after_id
        self.interval = interval
        self.batches: list = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        conn = read_only(self.db)
        try:
            while not self._halt.is_set():
                try:
                    rows = conn.execute("SELECT document_id, code FROM codes WHERE model_id = ? AND document_id > ? "
                                        "ORDER BY document_id", (self.model_id, self.last)).fetchall()
                except sqlite3.Error as err:
                    self.errors.append(str(err))
                    rows = []
                if rows:
                    seen = time.perf_counter()
                    with self.lock:
                        self.batches.append((seen, [(int(i), bytes(c).hex()) for i, c in rows]))
                    self.last = rows[-1][0]
                self._halt.wait(self.interval)
        finally:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


async def find_by_code(conn: Connection, port: int, doc_id: int, code: str) -> str:
    """``found``, ``missing``, or ``ambiguous`` (the top PROBE_K and then the top 1000 are all
    at distance 0 and do not include it): is ``doc_id`` in the server's index?"""
    for k in (PROBE_K, 1000):
        status, body = await conn.get(http_get(f"/api/search?code={code}&k={k}", port))
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        hits = json.loads(body)["hits"]
        if any(hit["id"] == doc_id for hit in hits):
            return "found"
        if not hits or hits[-1]["distance"] > 0:
            return "missing"
    return "ambiguous"


# ----------------------------------------------------------------------------- scenarios
def plans_for(clients: int, per_client: int, queries, ids, rng, port, search_share=SEARCH_SHARE):
    plans = []
    for _ in range(clients):
        warm = encode_plan(request_mix(queries, ids, WARMUP_PER_CLIENT, rng, search_share), port)
        measured = encode_plan(request_mix(queries, ids, per_client, rng, search_share), port)
        plans.append((warm, measured))
    return plans


def health_plans(clients: int, per_client: int, port: int):
    request = http_get("/api/health", port)
    return [([("health", request)] * WARMUP_PER_CLIENT, [("health", request)] * per_client) for _ in range(clients)]


PROFILE: dict = {"folder": None, "runs": set()}  # --profile: py-spy records these runs' servers


def search_batches(server: Server) -> tuple[int, int] | None:
    """The server's count of text-search batches and of the queries in them (one worker's)."""
    if server.workers != 1:
        return None  # /api/info answers from one worker of several
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/info", timeout=30) as answer:
        counted = json.load(answer).get("search_batches") or {}
    return counted.get("batches", 0), counted.get("queries", 0)


def measure(server: Server, name: str, scenario: str, clients: int, mix: str, plans, think: float = 0.0) -> dict:
    before = search_batches(server)
    run = run_async(drive(server.port, plans, server_cpu=server.cpu, think=think, max_seconds=MAX_RUN_SECONDS))
    row = summarise(name, scenario, clients, mix, run, run["server_cpu"])
    after = search_batches(server)
    if before and after and after[0] > before[0]:  # warm-up included: a few requests of each client
        row["queries_per_search_batch"] = round((after[1] - before[1]) / (after[0] - before[0]), 2)
    if run["capped"]:
        row["capped_at_s"] = MAX_RUN_SECONDS
        log(f"{name}: stopped after {MAX_RUN_SECONDS:.0f} s, before every client sent all its requests")
    if think:
        row["think_ms"] = round(think * 1e3, 1)
    if PROFILE["folder"] and name in PROFILE["runs"]:  # the same requests again, sampled: not in the figures
        profiler = Profiler(server, name)
        try:
            again = summarise(name, scenario, clients, mix,
                              run_async(drive(server.port, plans, think=think, max_seconds=MAX_RUN_SECONDS)), 0.0)
        finally:
            row["profile"] = profiler.stop()
        if row["profile"]:
            row["profile"].update(p50_ms=again["p50_ms"], rps=again["rps"])
    log(f"{name}: {row['requests']} requests, {row['errors']} errors, p50 {row['p50_ms']} ms, "
        f"p99 {row['p99_ms']} ms, {row['rps']} req/s; client CPU {row['client_cpu_share']:.0%}, "
        f"server {row['server_cpu_ms_per_request']} ms CPU/request; other processes {row['other_cores']} cores")
    return row


def run_async(coroutine):
    """Run ``coroutine`` on uvloop when installed (a cheaper client), else asyncio's loop."""
    return uvloop.run(coroutine) if uvloop is not None and hasattr(uvloop, "run") else asyncio.run(coroutine)


def run_add_scenario(db: Path, folder: Path, facts: dict, new_docs: list, queries, rng, clients: int,
                     add_cpus: str | None, batch_size: int | None) -> dict:
    """The 1-core server and ``clients`` clients while ``semhash add`` writes ``new_docs``."""
    corpus = folder / "new-posts.jsonl"
    with open(corpus, "w", encoding="utf-8") as out:
        for doc in new_docs:
            out.write(json.dumps({"id": doc.external_id, "text": doc.text, "title": doc.title, "label": doc.label},
                                 ensure_ascii=False) + "\n")
    add_log = folder / "add.log"
    watcher = CommitWatcher(db, facts["model_id"], after_id=max(facts["ids"]))
    server = Server(db, workers=1, cpus="0", folder=folder)
    try:
        port = server.port
        plans = plans_for(clients, 2000, queries, facts["ids"], rng, port)
        probes: dict[int, dict] = {}  # doc id -> {code, commit, visible, batch}
        state: dict = {"add": None, "add_started": None, "add_ended": None, "probe_failures": {}, "probe_requests": 0}
        stop = asyncio.Event()

        async def during():
            command = pinned([*semhash_command(), "add", str(corpus), "--db", str(db), "-q", "--json",
                              *(["--batch-size", str(batch_size)] if batch_size else [])], add_cpus)
            watcher.start()
            state["add_started"] = time.perf_counter()
            with open(add_log, "wb") as errors:
                proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=errors,
                                                            start_new_session=True)
            waiter = asyncio.create_task(proc.communicate())
            give_up = asyncio.Event()
            watchers: list[asyncio.Task] = []

            async def watch(doc_id: int, probe: dict) -> None:
                """Search for one committed document's code every PROBE_INTERVAL until found,
                on its own connection (a probe never waits behind another's)."""
                conn = Connection(port)
                try:
                    while probe["visible"] is None and not give_up.is_set():
                        state["probe_requests"] += 1
                        try:
                            verdict = await find_by_code(conn, port, doc_id, probe["code"])
                            if verdict == "found":
                                probe["visible"] = time.perf_counter()
                                break
                            if verdict == "ambiguous":  # over 1000 stored codes equal to its own: cannot tell
                                probe["ambiguous"] = True
                                break
                        except Exception as err:  # noqa: BLE001: a failed read, counted
                            why = f"probe {type(err).__name__}: {str(err)[:80]}"
                            state["probe_failures"][why] = state["probe_failures"].get(why, 0) + 1
                            conn.close()
                        await asyncio.sleep(PROBE_INTERVAL)
                finally:
                    conn.close()

            seen_batches = 0
            pick = random.Random(1)
            ended_at = None
            try:
                while True:
                    with watcher.lock:
                        new = watcher.batches[seen_batches:]
                    for seen, rows in new:
                        middle = pick.sample(range(len(rows)), min(len(rows), max(PROBES_PER_BATCH - 2, 0)))
                        for i in sorted({0, len(rows) - 1, *middle}):
                            doc_id, code = rows[i]
                            probes[doc_id] = {"code": code, "commit": seen, "visible": None, "batch": seen_batches}
                            watchers.append(asyncio.create_task(watch(doc_id, probes[doc_id])))
                        seen_batches += 1
                    if waiter.done() and ended_at is None:
                        ended_at = time.perf_counter()
                        state["add_ended"] = ended_at
                        stdout, _ = waiter.result()
                        state["add_returncode"] = proc.returncode
                        try:
                            state["add"] = json.loads(stdout.decode().strip().splitlines()[-1])
                        except (ValueError, IndexError):
                            state["add"] = {"output": stdout.decode(errors="replace")[-500:]}
                    if ended_at is not None:
                        with watcher.lock:
                            caught_up = len(watcher.batches) == seen_batches
                        pending = [p for p in probes.values() if p["visible"] is None and not p.get("ambiguous")]
                        # done: the add ended, its last commit was seen and probed, all visible
                        if caught_up and not pending and time.perf_counter() - ended_at > 1.0:
                            break
                        if time.perf_counter() - ended_at > FRESHNESS_TIMEOUT:
                            break
                    await asyncio.sleep(PROBE_INTERVAL)
            finally:
                stop.set()
                give_up.set()
                await asyncio.gather(*watchers, return_exceptions=True)
                if not waiter.done():
                    try:
                        os.killpg(proc.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
                    await waiter

        run = run_async(drive(port, plans, stop=stop, during=during, server_cpu=server.cpu))
        server_cpu = run["server_cpu"]
        row = summarise(f"add, {clients} clients", "add", clients, "80% search / 20% similar", run, server_cpu)

        # every added document: is it in the server's index now?
        with watcher.lock:
            added = [pair for _, rows in watcher.batches for pair in rows]
        final = run_async(check_all(port, added))
    finally:
        server.stop()
        if watcher.is_alive():
            watcher.stop()

    delays = [p["visible"] - p["commit"] for p in probes.values() if p["visible"] is not None]
    never = sum(p["visible"] is None and not p.get("ambiguous") for p in probes.values())
    ambiguous = sum(bool(p.get("ambiguous")) for p in probes.values())
    start = run["started"]
    commits = []
    for b, (seen, rows) in enumerate(watcher.batches):
        batch = [p for p in probes.values() if p["batch"] == b]
        vis = [p["visible"] - p["commit"] for p in batch if p["visible"] is not None]
        unsure = sum(bool(p.get("ambiguous")) for p in batch)
        commits.append({"seen_at_s": round(seen - start, 2), "documents": len(rows), "first_id": rows[0][0],
                        "last_id": rows[-1][0], "probed": len(batch), "ambiguous": unsure,
                        "visible_after_s": [round(v, 2) for v in vis], "never_visible": len(batch) - len(vis) - unsure})
    failed_reads = row["errors"] + sum(state["probe_failures"].values()) + final["errors"]
    return {
        "row": row,
        "add": state["add"], "add_returncode": state.get("add_returncode"),
        "add_seconds": round((state["add_ended"] or time.perf_counter()) - state["add_started"], 2),
        "add_cpus": add_cpus or "any", "documents_written": len(added), "commits": commits,
        "commit_watch_errors": watcher.errors[:5],
        "probe_requests": state["probe_requests"], "probe_failures": state["probe_failures"],
        "probed_documents": len(probes), "never_visible": never, "ambiguous_probes": ambiguous,
        "fresh_p50_s": round(float(np.percentile(delays, 50)), 2) if delays else None,
        "fresh_max_s": round(float(max(delays)), 2) if delays else None,
        "final_check": final,
        "failed_reads": failed_reads,
        "timeline": timeline(run),
        "server_reloads": server.log_count("reloaded"), "server_reload_failures": server.log_count("could not reload"),
        "server_log_tail": server.log_tail(10),
        "add_log_tail": add_log.read_text(errors="replace")[-1000:] if add_log.exists() else "",
    }


async def check_all(port: int, pairs: list, connections: int = 8) -> dict:
    """Whether each added ``(id, code)`` is found by a search for its code."""
    counts = {"found": 0, "missing": 0, "ambiguous": 0, "errors": 0}
    missing: list[int] = []
    queue = list(pairs)

    async def worker():
        conn = Connection(port)
        try:
            while queue:
                doc_id, code = queue.pop()
                try:
                    verdict = await find_by_code(conn, port, doc_id, code)
                except Exception:  # noqa: BLE001
                    verdict = "errors"
                    conn.close()
                counts[verdict] += 1
                if verdict == "missing":
                    missing.append(doc_id)
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {**counts, "checked": len(pairs), "missing_ids": missing[:10], "seconds": round(time.perf_counter() - started, 1)}


# ----------------------------------------------------------------------------- report
def targets(result: dict) -> list[dict]:
    rows = {row["name"]: row for row in result["runs"]}
    out = []
    one8 = rows.get("1 core, 8 clients")
    if one8:
        search = one8["by_kind"].get("search", {})
        out += [
            {"target": "search by text, 1 core, 8 clients (mixed load): p50 < 5 ms", "value": search.get("p50_ms"),
             "threshold": TARGETS["p50_ms"], "unit": "ms", "lower_is_better": True},
            {"target": "search by text, 1 core, 8 clients (mixed load): p99 < 25 ms", "value": search.get("p99_ms"),
             "threshold": TARGETS["p99_ms"], "unit": "ms", "lower_is_better": True},
        ]
    paced = rows.get("1 core, 8 clients, paced")
    if paced:
        search = paced["by_kind"].get("search", {})
        offered = f"{paced['rps']:.0f} req/s"
        out += [
            {"target": f"(reading with think time) search by text, 1 core, 8 paced clients ({offered}): p50 < 5 ms",
             "value": search.get("p50_ms"), "threshold": TARGETS["p50_ms"], "unit": "ms", "lower_is_better": True},
            {"target": f"(reading with think time) search by text, 1 core, 8 paced clients ({offered}): p99 < 25 ms",
             "value": search.get("p99_ms"), "threshold": TARGETS["p99_ms"], "unit": "ms", "lower_is_better": True},
        ]
    two = [row for row in result["runs"] if row["scenario"] == "2 cores" and row["mix"] != "health"]
    if "2 cores" in result.get("failed_starts", {}):
        out.append({"target": ">= 500 requests/s on 2 cores (`--workers 2` did not start)", "value": None,
                    "threshold": TARGETS["rps_2_cores"], "unit": "req/s"})
    if two:
        best = max(two, key=lambda row: row["rps"])
        out.append({"target": f">= 500 requests/s on 2 cores (mixed load; best: {best['clients']} clients)",
                    "value": best["rps"], "threshold": TARGETS["rps_2_cores"], "unit": "req/s"})
    diag = [row for row in result["runs"] if row["scenario"] == ONE_THREAD_SCENARIO]
    if diag:
        best = max(diag, key=lambda row: row["rps"])
        out.append({"target": f"(diagnostic) >= 500 requests/s on 2 cores with OMP_NUM_THREADS=1 in the server "
                              f"(best: {best['clients']} clients)",
                    "value": best["rps"], "threshold": TARGETS["rps_2_cores"], "unit": "req/s"})
    out.append({"target": "0 errors (every load run above)", "value": sum(row["errors"] for row in result["runs"]),
                "threshold": 0, "unit": "", "lower_is_better": True, "equal_ok": True})
    add = result.get("add")
    if add:
        out.append({"target": "0 failed reads while `semhash add` writes (load, probes, final check)",
                    "value": add["failed_reads"], "threshold": 0, "unit": "", "lower_is_better": True, "equal_ok": True})
        out.append({"target": "new documents searchable within 5 s of their commit (max over probes)",
                    "value": add["fresh_max_s"] if not add["never_visible"] else None,
                    "threshold": TARGETS["fresh_s"], "unit": "s", "lower_is_better": True})
    for t in out:
        v = t["value"]
        if v is None:
            ok = False
        elif t.get("equal_ok"):
            ok = v <= t["threshold"]
        elif t.get("lower_is_better"):
            ok = v < t["threshold"]
        else:
            ok = v >= t["threshold"]
        t["status"] = "PASS" if ok else "MISS"
    return out


def markdown(result: dict) -> str:
    quick = result["quick"]
    lines = [f"# `semhash serve` under load ({'quick' if quick else 'full'} run)", "",
             f"Database: {result['database']['source']} ({result['database']['documents']:,} documents, "
             f"{result['database']['bits']}-bit codes), served from a copy on {HOST}. Load: closed-loop clients, one "
             f"keep-alive HTTP/1.1 connection each, {int(SEARCH_SHARE * 100)}% `GET /api/search?q=` (subject line + "
             f"first {QUERY_WORDS} words of a 20 Newsgroups test post) / {100 - int(SEARCH_SHARE * 100)}% "
             f"`GET /api/similar/{{id}}` (random stored id), k={K}, seed {result['seed']}; {WARMUP_PER_CLIENT} "
             "warm-up requests per client first. `1 core`: the server pinned to core 0, the client on core 1. "
             "`2 cores`: `--workers 2`, unpinned, the client sharing the cores (its CPU share is in the table). "
             "Other processes: the CPU the rest of the machine used meanwhile, in cores (of 2): a shared machine's "
             "noise. Req/s per server core: requests over the server's CPU seconds, the rate a whole free core "
             "would give (less sensitive to that noise than req/s). Text queries per search batch: the server "
             "answers concurrent text queries together (`server/batching.py`); its own count, warm-up included, "
             "one worker only.", "",
             f"Code: commit {result['code']['commit']}"
             + (f", with uncommitted changes in {', '.join(result['code']['changed'])}" if result["code"]["changed"] else "")
             + ".", "",
             "| scenario | clients | mix | requests | errors | p50 ms | p99 ms | max ms | req/s | x 1-core same clients | "
             "search p50 / p99 ms | similar p50 / p99 ms | server CPU ms/req | req/s per server core | "
             "client CPU µs/req | client CPU share | other processes (cores) | text queries per search batch |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    one = {row["clients"]: row for row in result["runs"] if row["scenario"] == "1 core" and row["mix"] == "mixed"}

    def capped(row):
        return f" ({row['capped_at_s']:.0f} s cap)" if row.get("capped_at_s") else ""

    def pair(figures):
        return f"{figures['p50_ms']} / {figures['p99_ms']}" if figures else ""

    for row in result["runs"]:
        base = one.get(row["clients"]) if row["mix"] == "mixed" else None
        ratio = f"{row['rps'] / base['rps']:.2f}" if base and base["rps"] else ""
        s, m = row["by_kind"].get("search"), row["by_kind"].get("similar")
        lines.append(
            f"| {row['scenario']} | {row['clients']} | {row['mix']} | {row['requests']:,}{capped(row)} | {row['errors']} | "
            f"{row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | {row['rps']} | {ratio} | "
            f"{pair(s)} | {pair(m)} | "
            f"{row['server_cpu_ms_per_request']} | {row['rps_per_server_core']} | {row['client_us_per_request']} | "
            f"{row['client_cpu_share']:.0%} | "
            f"{row['other_cores']} | {row.get('queries_per_search_batch', '')} |")
    lines.append("")
    health = next((row for row in result["runs"] if row["name"] == "1 core, 8 clients, health"), None)
    mixed8 = one.get(8)
    if health and mixed8:
        lines += [f"Client cost: {health['client_us_per_request']} µs CPU per `/api/health` request "
                  f"({health['client_cpu_share']:.0%} of core 1 at {health['rps']} req/s), "
                  f"{mixed8['client_us_per_request']} µs per search/similar request ({mixed8['client_cpu_share']:.0%} "
                  f"of core 1): the client is not the limit. The trivial endpoint answers "
                  f"{health['rps'] / mixed8['rps']:.1f}x the mixed load's requests/s on the same core.", ""]
    if mixed8 and health:
        wait = 8 / mixed8["rps"] * 1e3
        lines += [f"Closed-loop clients queue: with 8 of them the mean latency is 8 / throughput = {wait:.1f} ms at "
                  f"{mixed8['rps']} req/s (Little's law), so p50 < 5 ms at 8 clients needs about 8 / 5 ms = 1,600 "
                  f"req/s on one core, {1600 / health['rps']:.0%} of what the trivial /api/health gets through the same "
                  f"stack here ({health['rps']} req/s). The paced run (clients pausing {THINK_SECONDS * 1e3:.0f} ms "
                  "on average between requests) shows the latency of a request that does not queue behind the "
                  "others.", ""]
    add = result.get("add")
    if add:
        row = add["row"]
        final = add["final_check"]
        lines += ["## While `semhash add` writes", "",
                  f"`semhash add` of {add['documents_written']:,} new posts (20 Newsgroups test split, new ids; "
                  f"default batches; pinned to core(s) {add['add_cpus']}) into the served copy took "
                  f"{add['add_seconds']} s; the 1-core server answered {row['clients']} clients meanwhile and "
                  f"reloaded its collection {add.get('server_reloads', '?')} times "
                  f"({add.get('server_reload_failures', 0)} failed reloads).", "",
                  "| requests | errors | p50 ms | p99 ms | max ms | req/s | other processes (cores; the add's "
                  "included) | probe requests | probe failures | failed reads | probed docs | fresh p50 s | fresh max s | "
                  "final check |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
                  f"| {row['requests']:,} | {row['errors']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | "
                  f"{row['rps']} | {row['other_cores']} | {add['probe_requests']} | {sum(add['probe_failures'].values())} | "
                  f"{add['failed_reads']} | {add['probed_documents']} | {add['fresh_p50_s']} | {add['fresh_max_s']} | "
                  f"{final['found']:,}/{final['checked']:,} found, {final['missing']} missing, "
                  f"{final['ambiguous']} ambiguous |", "",
                  "Commits seen (polling the copy every 50 ms) and how long the probed documents of each took "
                  "to be found by the server:", "", "| seen at s | documents | ids | probed | visible after s |",
                  "|---:|---:|---|---:|---|"]
        def never(commit):
            notes = [f"{commit['never_visible']} never"] if commit["never_visible"] else []
            notes += [f"{commit['ambiguous']} ambiguous"] if commit.get("ambiguous") else []
            return f" ({', '.join(notes)})" if notes else ""

        for c in add["commits"]:
            lines.append(f"| {c['seen_at_s']} | {c['documents']} | {c['first_id']}-{c['last_id']} | {c['probed']} | "
                         f"{', '.join(map(str, c['visible_after_s']))}{never(c)} |")
        worst = sorted(add["timeline"], key=lambda s: -(s["p99_ms"] or 0))[:5]
        lines += ["", "Worst seconds of the load during the add (by p99): "
                  + "; ".join(f"t={s['t']:.0f}s: {s['requests']} req, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
                              f"max {s['max_ms']} ms" for s in sorted(worst, key=lambda s: s["t"])) + ".", ""]
    profiled = [row for row in result["runs"] if row.get("profile")]
    if profiled:
        lines += ["## Where the server's time goes (py-spy)", "",
                  "Share of the server's sampled stacks (all threads and workers; the same requests run again under "
                  "`py-spy record --nonblocking`, not in the figures above; parts nest, so they do not add up):", "",
                  "| part | " + " | ".join(row["name"] for row in profiled) + " |",
                  "|---|" + "---:|" * len(profiled)]
        for label, _ in PROFILE_PARTS:
            lines.append(f"| {label} | " + " | ".join(f"{row['profile']['parts'].get(label, 0):.0%}" for row in profiled)
                         + " |")
        lines.append("| samples | " + " | ".join(str(row["profile"]["samples"]) for row in profiled) + " |")
        lines.append("")
    lines += ["## Targets", "", "| target | value | status |", "|---|---:|---|"]
    for t in result["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:g} {t['unit']}".strip()
        lines.append(f"| {t['target']} | {value} | {t['status']} |")
    startup = ", ".join(f"{name} {seconds} s" for name, seconds in result["startup_s"].items())
    lines += ["", f"Server start-up (to a warm /api/health, workers idle): {startup}."]
    for name, why in result.get("failed_starts", {}).items():
        lines.append(f"**{name}: the server did not start**: {why}")
    restarts = {name: n for name, n in result.get("worker_restarts", {}).items() if n}
    if restarts:
        lines.append("Workers uvicorn's supervisor found dead or unresponsive and replaced: "
                     + ", ".join(f"{name}: {n}" for name, n in restarts.items()) + ".")
    if result.get("idle_server_cores") is not None:
        lines.append(f"An idle 1-core server uses {result['idle_server_cores']:.1%} of its core (the reload thread "
                     "polling the database's revision every second).")
    lines.append("")
    if result.get("notes"):
        lines += [result["notes"], ""]
    if result.get("warmup_failures"):
        lines += [f"Warm-up requests that failed (not in the figures): {result['warmup_failures']}.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True,
                        help="the text database to serve (a copy is used), e.g. the 20 Newsgroups train posts")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (serve_load.quick.*)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--add-documents", type=int, help="posts `semhash add` writes (default 5,000; quick 300)")
    parser.add_argument("--add-cpus", default="1", help="cores the `semhash add` process is pinned to ('any': none)")
    parser.add_argument("--only", nargs="+", choices=["one", "two", "two1", "add"],
                        help="run only these scenarios (default: one two add; two1, a diagnostic: 2 workers with "
                             "OMP_NUM_THREADS=1 set for them, which the server now does itself)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the server with py-spy during the 8-client runs (1 and 2 cores) into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database copy, logs)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if not args.db.is_file():
        parser.error(f"{args.db} is not a database file")
    if (os.cpu_count() or 1) < 2:
        log("warning: fewer than 2 cores: the pinning below does not separate server and client")
    scenarios = set(args.only or ["one", "two", "add"])
    if args.profile:
        if not shutil.which("py-spy"):
            parser.error("--profile needs py-spy (pip install py-spy)")
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE.update(folder=args.profile, runs={"1 core, 8 clients", "1 core, 8 clients, search only",
                                                  "2 cores, 8 clients"})
    runs = QUICK_RUNS if args.quick else FULL_RUNS
    n_add = args.add_documents or (300 if args.quick else 5000)

    # Ctrl-C and SIGTERM unwind through the finally blocks, which stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    folder = Path(tempfile.mkdtemp(prefix="semhash-serve-load-"))
    try:
        log(f"copying {args.db} to {folder}")
        db = copy_database(args.db, folder)
        facts = collection_facts(db)
        log(f"{len(facts['ids']):,} documents with {facts['bits']}-bit codes")
        log("reading the 20 Newsgroups test posts")
        test = [d for d in read_documents(NEWSGROUPS, "20news-bydate-test") if (d.text or "").strip()]
        queries = encodable(sorted({q for q in (query_text(d) for d in test) if len(q.split()) >= 3}), db)
        rng = random.Random(args.seed)
        fresh = [d for d in test if d.external_id not in facts["external_ids"]]
        new_docs = random.Random(args.seed + 1).sample(fresh, min(n_add, len(fresh)))
        log(f"{len(queries):,} distinct queries; {len(new_docs):,} new posts for the add scenario")

        result = {"quick": args.quick, "seed": args.seed, "k": K, "search_share": SEARCH_SHARE, "code": code_state(),
                  "database": {"source": str(args.db), "documents": len(facts["ids"]), "bits": facts["bits"]},
                  "queries": len(queries), "runs": [], "startup_s": {}, "failed_starts": {}, "worker_restarts": {}, "loop": "uvloop" if uvloop is not None else "asyncio"}
        client_core = {1} if (os.cpu_count() or 1) >= 2 else None

        if "one" in scenarios:
            if client_core:
                os.sched_setaffinity(0, client_core)
            server = Server(db, workers=1, cpus="0", folder=folder)
            result["startup_s"]["1 core"] = round(server.startup_s, 1)
            try:
                result["idle_server_cores"] = round(server.idle_cpu(2.0 if args.quick else 5.0), 4)
                log(f"idle server: {result['idle_server_cores']:.1%} of a core (polling for writes)")
                for clients, per_client in runs.items():
                    plans = plans_for(clients, per_client, queries, facts["ids"], rng, server.port)
                    result["runs"].append(measure(server, f"1 core, {clients} clients", "1 core", clients, "mixed", plans))
                plans = plans_for(8, runs[8], queries, facts["ids"], rng, server.port, search_share=1.0)
                result["runs"].append(measure(server, "1 core, 8 clients, search only", "1 core", 8, "search only", plans))
                # the same clients pausing between requests: latency when the core is not saturated
                plans = plans_for(8, PACED_REQUESTS[args.quick], queries, facts["ids"], rng, server.port)
                result["runs"].append(measure(server, "1 core, 8 clients, paced", "1 core", 8,
                                              f"mixed, think {THINK_SECONDS * 1e3:.0f} ms", plans, think=THINK_SECONDS))
                result["runs"].append(measure(server, "1 core, 8 clients, health", "1 core", 8, "health",
                                              health_plans(8, HEALTH_REQUESTS[args.quick], server.port)))
            finally:
                server.stop()

        def two_cores(scenario: str, key: str, env: dict | None, health: bool) -> None:
            """The 2-worker server (unpinned) at 8 and 64 clients; a server that does not
            start is reported, and the other scenarios still run."""
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            try:
                server = Server(db, workers=2, cpus=None, folder=folder, env=env, ready_timeout=240)
            except RuntimeError as err:
                log(f"{scenario}: {err}")
                result["failed_starts"][scenario] = str(err).splitlines()[0]
                return
            result["startup_s"][scenario] = round(server.startup_s, 1)
            try:
                for clients in (8, 64):
                    plans = plans_for(clients, runs[clients] * 2, queries, facts["ids"], rng, server.port)
                    result["runs"].append(measure(server, f"{key}, {clients} clients", scenario, clients, "mixed", plans))
                if health:
                    result["runs"].append(measure(server, f"{key}, 64 clients, health", scenario, 64, "health",
                                                  health_plans(64, HEALTH_REQUESTS[args.quick] // 4, server.port)))
            finally:
                server.stop()
                result["worker_restarts"][scenario] = server.worker_restarts()

        if "two" in scenarios:
            two_cores("2 cores", "2 cores", None, health=True)
        if "two1" in scenarios:  # diagnostic: the same, each worker's thread pools at one thread
            two_cores(ONE_THREAD_SCENARIO, "2 cores, 1 thread", ONE_THREAD, health=False)

        if "add" in scenarios:
            if client_core:
                os.sched_setaffinity(0, client_core)
            log(f"add scenario: `semhash add` of {len(new_docs)} posts while 8 clients search")
            add_cpus = None if args.add_cpus == "any" else args.add_cpus
            result["add"] = run_add_scenario(db, folder, facts, new_docs, queries, rng, 8, add_cpus,
                                             batch_size=100 if args.quick else None)
            add = result["add"]
            log(f"add: {add['documents_written']} documents in {add['add_seconds']} s; failed reads "
                f"{add['failed_reads']}; fresh p50 {add['fresh_p50_s']} s, max {add['fresh_max_s']} s; "
                f"final check {add['final_check']}")

        result["warmup_failures"] = dict(WARMUP_FAILURES)
        result["targets"] = targets(result)
        result["notes"] = (
            "Latency is measured by the client (request written to body read). Server CPU: user + system time of "
            "the server's processes over the run, per request. On this shared 2-core machine timings are noisy; "
            "compare rows of one run.")
        print(markdown(result))
        stem = "serve_load.quick" if args.quick else "serve_load"
        paths = write_results(args.out, stem, result, markdown(result))
        log(f"wrote {paths['json']} and {paths['md']}")
    finally:
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
