"""A real Redis (Debian's ``redis-server``) on a free 127.0.0.1 port, password-protected, for tests.

Persistence is off by default (``--save '' --appendonly no``); ``appendonly=True`` turns AOF on (fsync always)
for tests that restart it and expect the data back (``stop(keep_data=True)`` then ``start()``).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .kafka import child_guard, free_port


class RedisUnavailable(RuntimeError):
    """redis-server is not installed (apt-get install redis-server)."""


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    HOST = "127.0.0.1"

    def __init__(self, base_dir: Path | None = None, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable("redis-server not found on PATH (apt-get install redis-server)")
        self.binary = binary
        self._own_dir = base_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="ckbpool-redis-")) if base_dir is None else Path(base_dir)
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def start(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.HOST,
            "--protected-mode", "yes",
            "--requirepass", self.password,
            "--dir", str(self.dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--save", "",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=child_guard(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"redis-server exited: {err}\n{self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop(keep_data=True)
        raise TimeoutError(f"redis-server did not answer PING within {timeout}s\n{self.log_tail()}")

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send AUTH then one command over a fresh connection; return the raw reply of the command."""
        with socket.create_connection((self.HOST, self.port), timeout=timeout) as sock:
            sock.sendall(_resp("AUTH", self.password) + _resp(*args))
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        auth, _, reply = data.partition(b"\r\n")
        if auth != b"+OK":
            raise RuntimeError(f"redis AUTH failed: {auth!r}")
        return reply

    def ping(self) -> bool:
        try:
            return self.command("PING", timeout=0.5).startswith(b"+PONG")
        except (OSError, RuntimeError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, keep_data: bool = False, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process is not None and process.stderr is not None:
            with contextlib.suppress(OSError):
                process.stderr.close()
        if not keep_data and self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed; the data directory (AOF) stays for ``start()``."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        if process is not None and process.stderr is not None:
            with contextlib.suppress(OSError):
                process.stderr.close()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
