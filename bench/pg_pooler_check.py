#!/usr/bin/env python3
"""Check the LISTEN/NOTIFY pooler detection against a real PgBouncer (not a timing bench: a manual check).

    python bench/pg_pooler_check.py        # needs `pgbouncer` on PATH (Debian: apt-get install pgbouncer)

Starts a throwaway PostgreSQL server and, for pool_mode transaction then session, a PgBouncer in front of it, and
opens a board's listener (live/pg_listen.PgBell) through it. Expected: transaction -> mode "poll" with one warning
(LISTEN does not work through a transaction pooler); session -> mode "listen", no warning. Exits 1 otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from hermes_cli.kanban.live.pg_listen import PgBell  # noqa: E402
from hermes_cli.kanban.store.pg.server import ThrowawayServer, free_port, server_user  # noqa: E402


def run_bouncer(workdir: Path, mode: str, server_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    ini = workdir / f"{mode}.ini"
    ini.write_text(
        f"[databases]\npb = host=127.0.0.1 port={server_port} dbname=pb user=postgres\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n"
        f"auth_file = {workdir}/users.txt\npool_mode = {mode}\nunix_socket_dir =\nlogfile = {workdir}/{mode}.log\n"
        f"pidfile = {workdir}/{mode}.pid\nignore_startup_parameters = extra_float_digits,options,application_name\n",
        encoding="utf-8")
    (workdir / "users.txt").write_text('"postgres" ""\n', encoding="utf-8")
    argv = ["pgbouncer", str(ini)]
    user = server_user()
    if os.geteuid() == 0 and user:
        argv = ["runuser", "-u", user, "--", *argv]  # PgBouncer refuses to run as root
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/pb", connect_timeout=2):
                return proc, port
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"pgbouncer ({mode}) did not start; see {workdir}/{mode}.log") from None
            time.sleep(0.1)


def main() -> int:
    if shutil.which("pgbouncer") is None:
        print("pgbouncer is not installed (Debian: apt-get install pgbouncer)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="hermes-pooler-"))
    os.chmod(workdir, 0o777)  # the bouncer runs as the server's unprivileged user
    server = ThrowawayServer(fsync=False).start()
    results: dict[str, object] = {}
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE pb TEMPLATE template0')
        for mode in ("transaction", "session"):
            proc, port = run_bouncer(workdir, mode, server.port)
            try:
                warnings: list[str] = []
                bell = PgBell(f"postgresql://postgres@127.0.0.1:{port}/pb", "default", f"check-{mode}",
                              warn=warnings.append)
                if not bell.probed.wait(15):
                    raise SystemExit(f"the probe through pgbouncer ({mode}) never decided")
                results[mode] = {"mode": bell.mode, "warnings": warnings}
                bell.close()
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    tx, session = results["transaction"], results["session"]
    ok = (tx["mode"] == "poll" and len(tx["warnings"]) == 1  # type: ignore[index]
          and session == {"mode": "listen", "warnings": []})
    print(json.dumps({"check": "pg_pooler", "results": results, "ok": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
