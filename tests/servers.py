"""Real servers for the tests, started on 127.0.0.1 and stopped afterwards.

PostgreSQL: a throw-away cluster (``initdb``) in a temporary folder, on a free port, with
trust authentication for local connections only. As root (CI), the server runs as the
``postgres`` user, since PostgreSQL refuses to run as root. `tests/install-servers.sh`
installs the binaries on a fresh machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run `bash tests/install-servers.sh`")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running PostgreSQL; yields the SQLAlchemy URL of an empty database ``semhash``."""
    folder = Path(tempfile.mkdtemp(prefix="semhash-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    run = lambda command: subprocess.run(_as_server_user(command), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run([_postgres_bin("initdb"), "-D", str(data), "-U", "semhash", "--auth=trust", "-E", "UTF8", "--no-sync"])
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        run([_postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"])
        try:
            _wait_until_accepting(port)
            run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "semhash", "semhash"])
            yield f"postgresql+psycopg://semhash@127.0.0.1:{port}/semhash"
        finally:
            run([_postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_accepting(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL did not accept connections on 127.0.0.1:{port}")


@contextmanager
def semhash_server(database: str | Path, *args: str, env: dict | None = None, timeout: float = 120) -> Iterator[str]:
    """`semhash serve` on a free port of 127.0.0.1 in its own process; yields its base URL
    once /api/health answers, and stops it afterwards."""
    import sys
    import urllib.error
    import urllib.request

    port = _free_port()
    command = [sys.executable, "-m", "semhash.cli", "serve", "--db", str(database), "--port", str(port), "-q", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"semhash serve exited with {process.returncode}: {process.stdout.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"semhash serve did not answer within {timeout:.0f}s") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
