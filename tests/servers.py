"""Real servers for the tests, started on 127.0.0.1 and stopped afterwards.

PostgreSQL: a throw-away cluster (``initdb``) in a temporary folder, on a free port, with
trust authentication for local connections only. As root (CI), the server runs as the
``postgres`` user, since PostgreSQL refuses to run as root. `tests/install-servers.sh`
installs the binaries on a fresh machine.

Milvus: the standalone server of the ``milvus`` PyPI package (``pip install milvus==2.3.5``),
in a temporary folder, on free ports.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager, suppress
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


@contextmanager
def milvus_server() -> Iterator[str]:
    """A running standalone Milvus from the ``milvus`` PyPI package (a real server, no
    network needed); yields its URI for ``--codes``, ``milvus://127.0.0.1:PORT``.

    Its data and logs go to a temporary folder, removed afterwards; every port it may choose
    is a free one of 127.0.0.1 (the package binds its gRPC ports on every interface, and
    its embedded etcd's peer port is always 2380: one such server at a time). The package's
    binaries (~250 MB unpacked from the wheel, most of a cold start) are unpacked once into
    ``~/.cache/semhash/milvus-server-<version>`` and linked from each server's folder.
    """
    import milvus

    folder = Path(tempfile.mkdtemp(prefix="semhash-milvus-"))
    try:
        (folder / "bin").symlink_to(_milvus_binaries(milvus), target_is_directory=True)
        config = milvus.MilvusServerConfig(data_dir=str(folder))
        ports = {key: _free_port() for key in config.configurable_items if key.endswith("_port")}
        config.update(**ports)
        server = milvus.MilvusServer(config)
        pid = None
        try:
            server.start()  # waits until its health check answers
            pid = server.server_proc.pid
            yield f"milvus://127.0.0.1:{server.listen_port}"
        finally:
            server.stop()
            if pid is not None:  # the one file it writes outside its folder, whatever it is told
                Path(f"/tmp/milvus/server_id_{pid}").unlink(missing_ok=True)
                with suppress(OSError):
                    Path("/tmp/milvus").rmdir()  # when empty
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _milvus_binaries(milvus) -> Path:
    """The ``milvus`` package's server binaries, unpacked once (atomically) into the user's cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "semhash"
    target = cache / f"milvus-server-{milvus.__version__}"
    if not (target / "bin" / "milvus.lzma.md5").exists():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="milvus-unpack-", dir=cache))
        try:
            milvus._initialize_data_files(str(staging))  # writes staging/bin, the checksums last
            try:
                staging.rename(target)
            except OSError:  # another process got there first, or a partial leftover
                if not (target / "bin" / "milvus.lzma.md5").exists():
                    shutil.rmtree(target, ignore_errors=True)
                    staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "bin"


def new_database(server_url: str, name: str, owner: str | None = None) -> str:
    """Create database ``name`` on the server of ``server_url`` (owned by ``owner``); its URL."""
    import sqlalchemy as sa

    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else "")))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def has_pgvector(url: str) -> bool:
    """Whether the server of ``url`` can create the pgvector extension (installed with it)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")).scalar() > 0
    finally:
        engine.dispose()


def milvus_lite_installed() -> bool:
    """Whether milvus-lite (and its client) can be imported here."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite 2.5 imports the deprecated pkg_resources
            import milvus_lite  # noqa: F401
            import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True
