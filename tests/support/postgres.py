"""A real, throwaway PostgreSQL (Debian's ``postgresql-15``) on a free 127.0.0.1 port, for tests.

``initdb`` makes a fresh cluster in a temporary directory (password auth, scram-sha-256), the server runs in the
foreground as a child of the test process (so ``PR_SET_PDEATHSIG`` takes it down with a killed test run, which a
``pg_ctl``-daemonised server would outlive), and ``pg_ctl status`` / a real login tell when it is ready. As root
(CI, this machine) the cluster belongs to Debian's ``postgres`` user: PostgreSQL refuses to run as root.
Every wait is bounded; ``stop()`` is a fast shutdown (SIGINT: clients are disconnected, nothing waits for them)
and removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kafka import child_guard, free_port


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed (apt-get install postgresql-15; make deps does it)."""


def find_pg_bindir() -> Path:
    """The directory of ``initdb`` / ``postgres`` / ``pg_ctl``: $CKBPOOL_PG_BINDIR, Debian's
    /usr/lib/postgresql/<newest>/bin, or PATH (Debian does not put them on PATH)."""
    explicit = os.environ.get("CKBPOOL_PG_BINDIR")
    candidates = [explicit] if explicit else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    raise PostgresUnavailable("PostgreSQL server binaries not found (apt-get install postgresql-15)")


class PostgresServer:
    HOST = "127.0.0.1"
    USER = "ckbpool"

    def __init__(
        self, *, database: str = "ledger", durable: bool = False, settings: dict[str, str] | None = None
    ) -> None:
        self.bindir = find_pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="ckbpool-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.database = database
        self.durable = durable
        self.settings = dict(settings or {})  # more `-c name=value` (TLS, hba_file: test_secure_scrape_live)
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def url(self, driver: str = "postgresql+psycopg", database: str | None = None) -> str:
        return f"{driver}://{self.USER}:{self.password}@{self.HOST}:{self.port}/{database or self.database}"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgres.log"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True, text=True, timeout=timeout, user=self._run_as, cwd=self.dir,
        )  # fmt: skip

    def init(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        result = self._run(
            "initdb", "-D", str(self.data), "-U", self.USER, "--pwfile", str(pwfile), "--auth", "scram-sha-256",
            "--encoding", "UTF8", "--locale", "C", "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr or result.stdout}")

    def start(self, timeout: float = 30.0) -> None:
        if self.process is not None:
            return
        if not (self.data / "PG_VERSION").exists():
            self.init()
        args = [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", f"listen_addresses={self.HOST}", "-c", f"unix_socket_directories={self.dir}",
            "-c", "max_connections=40", "-c", "shared_buffers=16MB",
        ]  # fmt: skip
        if not self.durable:  # throwaway data: no fsync (a test that kills the server passes durable=True)
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, user=self._run_as,
                start_new_session=True, preexec_fn=child_guard(), cwd=self.dir,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail()}")
            if self._ready():
                self._create_database()
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"postgres did not accept logins within {timeout}s\n{self.log_tail()}")

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgresql", "postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgresql", "postgres"), autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, keep_data: bool = False, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


@contextlib.contextmanager
def running_postgres(**kwargs: object) -> Iterator[PostgresServer]:
    """A started server, stopped (and its directory removed) on exit."""
    server = PostgresServer(**kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL per test module (tests take a fresh database each: see ``fresh_database``)."""
    with running_postgres() as server:
        yield server


def fresh_database(server: PostgresServer, name: str | None = None) -> str:
    """Create an empty database on ``server``; returns its SQLAlchemy URL (psycopg 3)."""
    import psycopg

    name = name or f"t_{secrets.token_hex(6)}"
    with psycopg.connect(server.url("postgresql", "postgres"), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url(database=name)
