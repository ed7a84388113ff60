"""Worker processes: `Proc` (a worker.py process in a system's venv, its stdout lines collected by a thread),
`wait_ready`, and `Helper` (one long-lived `worker.py serve` per system for seed/verify/info)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

from harness.config import WORKER


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_") and k != "PYTHONPATH"}
    if os.environ.get("BENCH_HERMES_AGENT_NO_LENGTH_PROBE"):  # diagnostic switch, see adapters/hermes_agent.py
        env["BENCH_HERMES_AGENT_NO_LENGTH_PROBE"] = os.environ["BENCH_HERMES_AGENT_NO_LENGTH_PROBE"]
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A worker process with a thread that collects its stdout lines (with arrival times)."""

    def __init__(self, py: Path, adapter: str, role: str, stderr_path: Path, *, stdin=True, **opts):
        args = [str(py), str(WORKER), role, "--adapter", adapter]
        for k, v in opts.items():
            if v is None or v is False:
                continue
            flag = "--" + k.replace("_", "-")
            args += [flag] if v is True else [flag, str(v)]
        self.args = args
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "ab")
        self.p = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=child_env(),
        )
        self.pid = self.p.pid
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put((time.time(), line.rstrip("\n")))
        self.lines.put((time.time(), None))

    def next_line(self, timeout: float):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None, None

    def send(self, text: str):
        try:
            self.p.stdin.write(text + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait(self, timeout: float | None = None):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.p.wait()

    def kill(self, sig=signal.SIGKILL):
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stderr_tail(self, n=600):
        try:
            self._err.flush()
            return self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self):
        if self.p.poll() is None:
            self.kill()
            self.p.wait()
        self._err.close()


def wait_ready(procs: list[Proc], timeout: float) -> str | None:
    """Wait for every proc's "ready" line. Returns an error string (or "NOTSUPPORTED reason") or None."""
    deadline = time.time() + timeout
    for pr in procs:
        while True:
            _, line = pr.next_line(max(0.01, deadline - time.time()))
            if line == "ready":
                break
            if line is None:
                return f"worker did not become ready: {pr.stderr_tail()}"
            if line.startswith("NOTSUPPORTED"):
                return line
    return None


class Helper:
    """A long-lived `worker.py serve` process per system for seed/verify/info (saves interpreter start-ups)."""

    def __init__(self, name: str, py: Path, logdir: Path):
        self.name = name
        self.proc = Proc(py, name, "serve", logdir / f"helper-{name}.stderr")
        self.lock = threading.Lock()

    def call(self, op: str, timeout: float = 600, **kw):
        with self.lock:
            self.proc.send(json.dumps({"op": op, **kw}))
            _, line = self.proc.next_line(timeout)
        if line is None:
            raise RuntimeError(f"{self.name} helper died: {self.proc.stderr_tail()}")
        res = json.loads(line)
        if not res["ok"]:
            raise RuntimeError(f"{self.name} {op}: {res['error']}\n{res.get('trace', '')}")
        return res["result"]

    def close(self):
        try:
            self.proc.p.stdin.close()
        except OSError:
            pass
        self.proc.wait(10)
        self.proc.close()
