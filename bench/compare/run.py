#!/usr/bin/env python3
"""Peer-comparison benchmark: hermes kanban vs hermes-agent's kanban_db, huey, litequeue and persist-queue.

    python bench/compare/run.py [--quick] [--out results.json]

Standard library only. Every system is installed from PyPI (hermes kanban from this checkout) into its own
virtualenv under bench/.venvs/<name> (reused when present), and every measured operation runs in real worker
processes started with that venv's python (bench/compare/worker.py + bench/compare/adapters/<name>.py).
Scenarios (see bench/compare/README.md): fsync probe, B1 burn-down, B2 chaos (SIGKILL) + stall (SIGSTOP/SIGCONT),
B3 observer contention, physical limit. Progress goes to stderr; the tables to stdout; everything to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
WORKER = HERE / "worker.py"

ORDER = ["hermes-kanban", "hermes-agent", "huey", "litequeue", "persist-queue"]
SYSTEMS = {
    # name -> pip requirements installed into bench/.venvs/<name>
    "hermes-kanban": {"pip": [str(ROOT)], "local": True},
    "hermes-agent": {"pip": ["hermes-agent==0.19.0"]},
    "huey": {"pip": ["huey==3.5.4"]},
    "litequeue": {"pip": ["litequeue==0.9"]},
    "persist-queue": {"pip": ["persist-queue==1.1.0"]},
}
DURABILITIES = ["full", "normal"]

PROFILES = {
    "full": {
        "repeats": 3,
        "b1_board": 20_000,
        "b1_window": 1.5,
        "b1_workers": [1, 2, 4, 8],
        "b2_tasks": 400,
        "b2_task_s": 0.25,
        "b2_workers": 4,
        "b2_kill_every": 3.0,
        "b2_repeats": 3,
        "lease": 2.0,
        "stall_k": 3,
        "b3_sizes": [10_000, 100_000],
        "b3_duration": 3.0,
        "b3_repeats": 3,
        "fsync_seconds": 1.0,
        "strace_tasks": 300,
    },
    "quick": {
        "repeats": 1,
        "b1_board": 2_000,
        "b1_window": 0.5,
        "b1_workers": [1, 2, 4, 8],
        "b2_tasks": 100,
        "b2_task_s": 0.25,
        "b2_workers": 4,
        "b2_kill_every": 3.0,
        "b2_repeats": 1,
        "lease": 2.0,
        "stall_k": 2,
        "b3_sizes": [2_000, 10_000],
        "b3_duration": 2.0,
        "b3_repeats": 1,
        "fsync_seconds": 0.5,
        "strace_tasks": 100,
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ms(x):
    return None if x is None else x * 1000.0


# --------------------------------------------------------------------------------------------------------------
# virtualenvs
# --------------------------------------------------------------------------------------------------------------


def ensure_venv(name: str, venv_root: Path) -> tuple[Path | None, str | None, float]:
    """Create/reuse bench/.venvs/<name>; return (python, error, seconds)."""
    t0 = time.time()
    spec = SYSTEMS[name]
    vdir = venv_root / name
    py = vdir / "bin" / "python"
    marker = vdir / ".bench-spec"
    want = json.dumps(spec["pip"])
    pip_log = venv_root / f"{name}.pip.log"
    if spec.get("local") and not (ROOT / "pyproject.toml").exists():
        return None, f"n/a: {ROOT}/pyproject.toml does not exist yet", 0.0

    def pip(*args):
        with open(pip_log, "a") as f:
            r = subprocess.run(
                [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        if r.returncode != 0:
            tail = pip_log.read_text()[-800:]
            raise RuntimeError(f"pip install {' '.join(args)} failed:\n{tail}")

    try:
        if not py.exists() or not marker.exists() or marker.read_text() != want:
            log(f"creating venv {vdir} ({' '.join(spec['pip'])})")
            shutil.rmtree(vdir, ignore_errors=True)
            venv_root.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(vdir)], check=True)
            pip_log.write_text("")
            pip(*spec["pip"])
            marker.write_text(want)
        elif spec.get("local"):
            # the product changes under us: rebuild it from the checkout on every run (dependencies stay)
            log(f"reinstalling {name} from {ROOT}")
            pip_log.write_text("")
            pip("--no-deps", "--force-reinstall", *spec["pip"])
    except Exception as exc:  # noqa: BLE001 - reported as "system unavailable"
        return None, f"n/a: venv setup failed: {exc}", time.time() - t0
    return py, None, time.time() - t0


def _copy_regular(src, dst):
    """copytree helper: copy regular files only (a board dir may hold FIFOs, which would block a copy)."""
    if Path(src).is_file():
        shutil.copy2(src, dst)


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_") and k != "PYTHONPATH"}
    if os.environ.get("BENCH_HERMES_AGENT_NO_LENGTH_PROBE"):  # diagnostic switch, see adapters/hermes_agent.py
        env["BENCH_HERMES_AGENT_NO_LENGTH_PROBE"] = os.environ["BENCH_HERMES_AGENT_NO_LENGTH_PROBE"]
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.cfg = dict(PROFILES["quick" if args.quick else "full"])
        for key in ("repeats", "b1_board", "b1_window", "b2_repeats", "b3_repeats"):
            val = getattr(args, key, None)
            if val is not None:
                self.cfg[key] = val
        if args.b3_sizes:
            self.cfg["b3_sizes"] = [int(x) for x in args.b3_sizes.split(",")]
        self.venv_root = Path(args.venv_dir).resolve()
        self.cache = Path(args.cache_dir).resolve()
        self.work = self.cache / "work" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.logdir = self.work / "logs"
        self.logdir.mkdir()
        self.py: dict[str, Path] = {}
        self.info: dict[str, dict] = {}
        self.unavailable: dict[str, str] = {}
        self.helpers: dict[str, Helper] = {}
        self.templates: dict[tuple[str, int], tuple[Path, list[str]]] = {}
        self.template_lock = threading.Lock()
        self.cell_no = 0
        self.cell_lock = threading.Lock()
        self.results: dict = {"notes": []}
        self.systems = [s for s in ORDER if s in args.systems.split(",")]

    # ---- setup ------------------------------------------------------------------------------------------------
    def setup(self):
        t0 = time.time()
        setup_times = {}
        for name in self.systems:
            py, err, secs = ensure_venv(name, self.venv_root)
            setup_times[name] = round(secs, 1)
            if err:
                self.unavailable[name] = err
                log(f"{name}: {err.splitlines()[0]}")
                continue
            self.py[name] = py
            helper = Helper(name, py, self.logdir)
            try:
                self.info[name] = helper.call("info", timeout=120)
            except Exception as exc:  # noqa: BLE001 - a system whose adapter cannot load is reported n/a
                self.unavailable[name] = f"n/a: adapter failed to load: {str(exc).splitlines()[0]}"
                log(f"{name}: {self.unavailable[name]}\n{exc}")
                helper.close()
                continue
            self.helpers[name] = helper
            log(f"{name} {self.info[name]['version']} ready (sqlite {self.info[name]['sqlite']})")
        self.results["setup_seconds"] = round(time.time() - t0, 1)
        self.results["setup_seconds_by_system"] = setup_times

    def avail(self):
        return [s for s in self.systems if s in self.info]

    def template(self, name: str, n: int) -> tuple[Path, list[str]]:
        """A seeded board of n tasks, cached under .cache/templates keyed by the adapter's fingerprint."""
        with self.template_lock:
            key = (name, n)
            if key in self.templates:
                return self.templates[key]
            fp = re.sub(r"[^A-Za-z0-9_.-]", "_", self.info[name]["fingerprint"])
            tdir = self.cache / "templates" / name / f"{fp}-{n}"
            ids_file = tdir / "ids.txt"
            if not ids_file.exists():
                # templates of older versions of this system (e.g. an earlier checkout of hermes kanban) go away
                for stale in tdir.parent.glob("*") if tdir.parent.exists() else []:
                    if not stale.name.startswith(fp + "-"):
                        shutil.rmtree(stale, ignore_errors=True)
                shutil.rmtree(tdir, ignore_errors=True)
                tmp = tdir.with_name(f"{tdir.name}.tmp{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                log(f"seeding {name} template with {n} tasks")
                res = self.helpers[name].call("seed", dir=str(tmp / "board"), n=n, ids_file=str(tmp / "ids.txt"))
                log(f"  seeded in {res['seconds']:.1f}s")
                os.replace(tmp, tdir)
            ids = ids_file.read_text().split()
            self.templates[key] = (tdir / "board", ids)
            return self.templates[key]

    def fresh_board(self, name: str, n: int, tag: str) -> tuple[Path, list[str]]:
        src, ids = self.template(name, n)
        with self.cell_lock:
            self.cell_no += 1
            cell = self.work / f"{self.cell_no:04d}-{tag}-{name}"
        shutil.copytree(src, cell / "board", copy_function=_copy_regular)
        return cell, ids

    def spawn(self, name, role, cell: Path, label: str, **opts) -> Proc:
        return Proc(self.py[name], name, role, cell / f"{label}.stderr", dir=cell / "board", **opts)

    def verify(self, name, cell: Path) -> dict:
        try:
            return self.helpers[name].call("verify", dir=str(cell / "board"))
        except RuntimeError as exc:
            # e.g. hermes-agent's connect() refusing a board that failed its integrity probe
            return {
                "integrity": f"verify failed: {str(exc).splitlines()[0][:300]}",
                "done": None,
                "open": None,
                "inflight": None,
            }

    def done_with(self, cell: Path, keep=False):
        """Delete a scratch board, or move it under .cache/kept/ when it showed a problem (evidence)."""
        if self.args.keep:
            return
        kept = self.results.setdefault("kept_boards", [])
        if keep and len(kept) < 6:  # a few damaged boards per run are evidence enough
            kept_root = self.cache / "kept"
            if not (kept_root / self.work.name).exists() and kept_root.exists():
                for old in sorted(kept_root.iterdir())[:-1]:  # keep the evidence of the last 2 runs only
                    shutil.rmtree(old, ignore_errors=True)
            dest = kept_root / self.work.name / cell.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(cell), str(dest))
            kept.append(str(dest))
        else:
            shutil.rmtree(cell, ignore_errors=True)

    def durability_na(self, name, durability):
        return self.info[name]["durability"].get(durability)

    # ---- fsync probe ------------------------------------------------------------------------------------------
    def fsync_probe(self, when: str):
        """4 KiB pwrite + fdatasync loop. Probed several times during the run (the disk may be shared); the
        ceiling uses the median of the probes' p50."""
        seconds = self.cfg["fsync_seconds"]
        path = self.work / "fsync-probe.bin"
        buf = os.urandom(4096)
        size = 1 << 20
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"\0" * size)
            os.fsync(fd)
            lat = []
            off = 0
            end = time.time() + seconds
            while time.time() < end:
                os.pwrite(fd, buf, off)
                t0 = time.perf_counter()
                os.fdatasync(fd)
                lat.append(time.perf_counter() - t0)
                off = (off + 4096) % size
        finally:
            os.close(fd)
            path.unlink()
        probe = {
            "when": when,
            "n": len(lat),
            "p50_ms": ms(pct(lat, 50)),
            "p99_ms": ms(pct(lat, 99)),
            "mean_ms": ms(statistics.mean(lat)),
            "loadavg": os.getloadavg()[0],
        }
        probes = self.results.setdefault("fsync_probes", [])
        probes.append(probe)
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(self.work)], capture_output=True, text=True).stdout.strip()
        p50 = med([p["p50_ms"] for p in probes])
        self.results["fsync"] = {
            "dir": str(self.work),
            "fs_type": fs,
            "probes": len(probes),
            "n": sum(p["n"] for p in probes),
            "p50_ms": p50,
            "p99_ms": med([p["p99_ms"] for p in probes]),
            "p50_range_ms": [min(p["p50_ms"] for p in probes), max(p["p50_ms"] for p in probes)],
            "ceiling_per_s": 1000.0 / p50,
        }
        log(
            f"fsync probe ({when}): p50 {probe['p50_ms']:.3f} ms, p99 {probe['p99_ms']:.3f} ms over {len(lat)} "
            f"writes (load {probe['loadavg']:.1f})"
        )

    # ---- B1 -----------------------------------------------------------------------------------------------------
    def b1_cell(self, name, durability, workers, rep, use_next=False):
        cfg = self.cfg
        tag = f"b1{'next' if use_next else ''}-{durability}-w{workers}-r{rep}"
        cell, ids = self.fresh_board(name, cfg["b1_board"], tag)
        procs = [
            self.spawn(
                name,
                "burn",
                cell,
                f"w{k}",
                durability=durability,
                lease=60,
                out=cell / f"w{k}.json",
                stop_on_empty=True,
                next=use_next,
            )
            for k in range(workers)
        ]
        try:
            err = wait_ready(procs, 180)
            if err:
                return {"error": err}
            window = cfg["b1_window"] or 86_400.0
            t_go = time.time() + 0.2
            for pr in procs:
                pr.send(f"go {t_go} {t_go + window}")
            for pr in procs:
                pr.wait(window + 300)
            outs = []
            for k, pr in enumerate(procs):
                f = cell / f"w{k}.json"
                if not f.exists():
                    return {"error": f"worker {k} exited {pr.p.returncode} without results: {pr.stderr_tail()}"}
                outs.append(json.loads(f.read_text()))
        finally:
            for pr in procs:
                pr.close()
        v = self.verify(name, cell)
        completed = [t for o in outs for t in o["completed"]]
        uniq = set(completed)
        idset = set(ids)
        elapsed = max(o["t_last"] for o in outs) - t_go
        claim = [x for o in outs for x in o["claim_lat"]]
        comp = [x for o in outs for x in o["complete_lat"]]
        res = {
            "completed": len(completed),
            "elapsed_s": elapsed,
            "tasks_per_s": len(completed) / elapsed if elapsed > 0 else None,
            "claim_p50_ms": ms(pct(claim, 50)),
            "claim_p99_ms": ms(pct(claim, 99)),
            "complete_p50_ms": ms(pct(comp, 50)),
            "complete_p99_ms": ms(pct(comp, 99)),
            "busy": sum(o["busy"] for o in outs),
            "errors": sum(o["errors"] for o in outs),
            "error_samples": [e for o in outs for e in o["error_samples"]][:5],
            "conflicts": sum(o.get("conflicts", 0) for o in outs),
            "rejected": sum(o["rejected"] for o in outs),
            "duplicates": len(completed) - len(uniq),
            "unknown_ids": len(uniq - idset),
            "verify": v,
        }
        problems = []
        if res["duplicates"]:
            problems.append(f"{res['duplicates']} completed twice")
        if res["unknown_ids"]:
            problems.append(f"{res['unknown_ids']} unknown ids")
        if v["done"] is None:
            problems.append("board could not be counted")
        else:
            if v["done"] != len(uniq):
                problems.append(f"system says done={v['done']} but workers completed {len(uniq)}")
            if v["done"] + v["open"] + (v["inflight"] or 0) != len(ids):
                problems.append(f"{len(ids) - v['done'] - v['open'] - (v['inflight'] or 0)} tasks missing")
            # next scenario: each worker may stop holding the claim its last complete made (never handed out)
            pending = sum(o.get("pending", 0) for o in outs)
            if (v["inflight"] or 0) != pending:
                problems.append(f"{(v['inflight'] or 0) - pending} left in flight")
        if v["integrity"] != "ok":
            problems.append(f"integrity: {v['integrity'][:80]}")
        if res["errors"]:
            problems.append(f"{res['errors']} errors")
        fatal = [o["fatal"] for o in outs if o.get("fatal")]
        if fatal:
            res["fatal"] = fatal
            problems.append(f"{len(fatal)} worker(s) gave up: {fatal[0][:120]}")
        res["correct"] = not problems
        res["problems"] = problems
        self.done_with(cell, keep=v["integrity"] != "ok")
        return res

    def next_systems(self):
        """Systems that can complete and claim in one transaction (the `next` scenario)."""
        return [n for n in self.avail() if self.info[n].get("complete_next")]

    def run_b1(self, with_b1=True, with_next=False):
        """Repeats are interleaved (repeat -> cell -> system) so that a noisy stretch of time hits every system.
        `with_next`: the `next` scenario, B1 at FULL with complete-and-claim in one transaction, interleaved with
        the same cells (durability "full", mode "next")."""
        cfg = self.cfg
        cells = [(d, w) for d in DURABILITIES for w in cfg["b1_workers"]] if with_b1 else []
        next_cells = [("full", w) for w in cfg["b1_workers"]] if with_next else []
        runs: dict[tuple, list] = {}
        for rep in range(cfg["repeats"]):
            log(f"B1 repeat {rep + 1}/{cfg['repeats']}")
            plan = [(d, w, name, False) for d, w in cells for name in self.avail()]
            for d, w in next_cells:  # right after the same worker count's plain cells
                at = max((i + 1 for i, p in enumerate(plan) if p[0] == d and p[1] == w), default=len(plan))
                plan[at:at] = [(d, w, name, True) for name in self.next_systems()]
            for durability, w, name, use_next in plan:
                if self.durability_na(name, durability):
                    continue
                r = self.b1_cell(name, durability, w, rep, use_next=use_next)
                label = f"{name}{' --next' if use_next else ''}"
                runs.setdefault((name, "next" if use_next else durability, w), []).append(r)
                if "error" in r:
                    log(f"B1 {label} {durability} w={w} r{rep}: ERROR {r['error'][:300]}")
                else:
                    log(
                        f"B1 {label} {durability} w={w} r{rep}: {r['tasks_per_s']:.0f} tasks/s "
                        f"({r['completed']} in {r['elapsed_s']:.2f}s) busy={r['busy']} "
                        f"{'ok' if r['correct'] else 'PROBLEMS: ' + '; '.join(r['problems'])[:300]}"
                    )
        if with_b1:
            self.results["b1"] = self._b1_rows(runs, cells, self.avail(), lambda d: d)
        if with_next:
            self.results["b1_next"] = self._b1_rows(runs, next_cells, self.next_systems(), lambda d: "next")

    def _b1_rows(self, runs, cells, names, run_key):
        rows = []
        for name in names:
            for durability, w in cells:
                row = {"system": name, "durability": durability, "workers": w}
                na = self.durability_na(name, durability)
                if na:
                    row["na"] = na
                    rows.append(row)
                    continue
                cell_runs = runs[(name, run_key(durability), w)]
                good = [r for r in cell_runs if "error" not in r]
                row["runs"] = cell_runs
                if not good:
                    row["error"] = cell_runs[0]["error"]
                else:
                    for key in ("tasks_per_s", "claim_p50_ms", "claim_p99_ms", "complete_p50_ms", "complete_p99_ms"):
                        row[key] = med([r[key] for r in good])
                    for key in ("busy", "errors", "duplicates", "conflicts", "rejected", "completed"):
                        row[key] = sum(r[key] for r in good)
                    failing = [r for r in good if not r["correct"]]
                    row["correct"] = not failing and len(good) == len(cell_runs)
                    row["problems"] = (
                        [f"{len(failing)}/{len(cell_runs)} runs"] + failing[0]["problems"] if failing else []
                    )
                    row["n_runs"] = len(good)
                rows.append(row)
        return rows

    # ---- B2 chaos -------------------------------------------------------------------------------------------
    def start_monitor(self, name, cell, lease, status_file, stop):
        """The board's monitor process: reports its status every 0.25 s and, for systems whose recovery is a
        periodic tick (lease expiry), runs that recovery on the same tick."""
        return self.spawn(
            name,
            "monitor",
            cell,
            "monitor",
            stdin=False,
            lease=lease,
            tick=0.25,
            recover=self.info[name]["recovery"] == "tick",
            out=status_file,
            stop_file=stop,
        )

    def b2_once(self, name, rep):
        cfg = self.cfg
        lease = cfg["lease"]
        W = cfg["b2_workers"]
        cell, ids = self.fresh_board(name, cfg["b2_tasks"], f"b2-r{rep}")
        stop = cell / "stop"
        status_file = cell / "status.json"
        monitor = self.start_monitor(name, cell, lease, status_file, stop)
        incarnation = [0] * W
        slots: list[Proc] = []
        logs: list[Path] = []  # every incarnation's log, index-aligned with slot_of
        slot_log: list[Path] = [None] * W

        def start(k):
            incarnation[k] += 1
            lp = cell / f"w{k}.{incarnation[k]}.log"
            slot_log[k] = lp
            logs.append(lp)
            return self.spawn(
                name,
                "chaos",
                cell,
                f"w{k}.{incarnation[k]}",
                stdin=False,
                lease=lease,
                task_s=cfg["b2_task_s"],
                log=lp,
                stop_file=stop,
            )

        slots = [start(k) for k in range(W)]
        kills = []
        timed_out = False
        try:
            err = wait_ready([monitor] + slots, 180)
            if err:
                return {"error": err}
            t0 = time.time()
            expected = cfg["b2_tasks"] * cfg["b2_task_s"] / W
            deadline = t0 + 3 * expected + 30
            next_kill = t0 + cfg["b2_kill_every"]
            crashed = 0
            crash_sample = None
            respawn_at = [0.0] * W
            last_progress, last_fins = t0, 0
            stuck = False
            while True:
                now = time.time()
                for k in range(W):
                    if slots[k].p.poll() is not None and now >= respawn_at[k]:
                        # died on its own (not our SIGKILL): count it, respawn after a short pause
                        crashed += 1
                        crash_sample = crash_sample or slots[k].stderr_tail(400)
                        slots[k].close()
                        slots[k] = start(k)
                        respawn_at[k] = now + 0.5
                fins = sum(1 for lp in logs for parts in self._read_log(lp) if parts[0] == "F")
                if fins != last_fins:
                    last_fins, last_progress = fins, now
                elif now - last_progress > 10 and len(kills) > 0:
                    # nothing completed for 10 s although tasks take a fraction of a second: the board is stuck
                    stuck = True
                    break
                if now >= next_kill:
                    k = len(kills) % W
                    victim = slots[k]
                    victim.kill(signal.SIGKILL)
                    t_kill = time.time()
                    victim.wait()
                    victim.close()
                    kills.append({"t": t_kill, "slot": k, "log": str(slot_log[k])})
                    slots[k] = start(k)
                    next_kill += cfg["b2_kill_every"]
                if now > deadline:
                    timed_out = True
                    break
                try:
                    st = json.loads(status_file.read_text())
                except (OSError, ValueError):
                    st = None
                if st and st["t"] > now - 1.0 and st["remaining"] == 0 and self._idle(slot_log):
                    break
                time.sleep(0.1)
            t_end = time.time()
        finally:
            stop.touch()
            for pr in slots + [monitor]:
                pr.wait(10)
                pr.close()
        v = self.verify(name, cell)
        res = self._b2_analyze(ids, logs, kills, t0)
        res.update(
            {
                "drain_s": t_end - t0,
                "timed_out": timed_out,
                "kills": len(kills),
                "verify": v,
                "worker_crashes": crashed,
                "crash_sample": crash_sample,
                "stuck": stuck,
                "integrity": v["integrity"],
            }
        )
        try:
            res["monitor"] = json.loads(status_file.read_text())
        except (OSError, ValueError):
            pass
        res["worker_errors"] = self._b2_worker_errors(logs)
        self.done_with(cell, keep=v["integrity"] != "ok")
        return res

    @staticmethod
    def _read_log(path: Path):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 3 and parts[0] in ("S", "F", "H"):
                out.append(parts)
        return out

    def _idle(self, slot_log):
        """True when no live worker holds a task (every S in its log has its F)."""
        for lp in slot_log:
            open_tasks = set()
            for parts in self._read_log(lp):
                if parts[0] == "S":
                    open_tasks.add(parts[1])
                elif parts[0] == "F":
                    open_tasks.discard(parts[1])
            if open_tasks:
                return False
        return True

    def _b2_worker_errors(self, logs):
        busy = errors = 0
        samples = []
        for lp in logs:
            try:
                for line in lp.read_text().splitlines():
                    if line.startswith("X "):
                        d = json.loads(line[2:])
                        busy += d["busy"]
                        errors += d["errors"]
                        samples += d["error_samples"]
            except OSError:
                pass
        return {"busy": busy, "errors": errors, "error_samples": samples[:5]}

    def _b2_analyze(self, ids, logs, kills, t0):
        starts: dict[str, list] = {}
        fins: dict[str, list] = {}
        per_log = {}
        for lp in logs:
            entries = self._read_log(lp)
            per_log[str(lp)] = entries
            for parts in entries:
                tid, t = parts[1], float(parts[2])
                if parts[0] == "S":
                    starts.setdefault(tid, []).append((t, str(lp)))
                elif parts[0] == "F":
                    fins.setdefault(tid, []).append((t, int(parts[3]), str(lp)))
        accepted = {tid: sum(1 for f in fl if f[1]) for tid, fl in fins.items()}
        lost = [tid for tid in ids if accepted.get(tid, 0) == 0]
        dup_exec = sum(max(0, len(fl) - 1) for fl in fins.values())
        dup_accepted = sum(max(0, n - 1) for n in accepted.values())
        rejected = sum(1 for fl in fins.values() for f in fl if not f[1])
        reexec = sum(max(0, len(sl) - 1) for sl in starts.values())
        latencies = []
        unreclaimed = 0
        held_total = 0
        for kill in kills:
            held = {}
            for parts in per_log.get(kill["log"], []):
                if parts[0] == "S":
                    held[parts[1]] = float(parts[2])
                elif parts[0] == "F":
                    held.pop(parts[1], None)
            for tid in held:
                held_total += 1
                later = [t for t, lp in starts.get(tid, []) if t > kill["t"]]
                if later:
                    latencies.append(min(later) - kill["t"])
                else:
                    unreclaimed += 1
        return {
            "tasks": len(ids),
            "lost": len(lost),
            "lost_sample": lost[:5],
            "dup_exec": dup_exec,
            "dup_accepted": dup_accepted,
            "rejected_completions": rejected,
            "reexecutions": reexec,
            "killed_holding": held_total,
            "unreclaimed": unreclaimed,
            "reclaim_p50_s": med(latencies),
            "reclaim_max_s": max(latencies) if latencies else None,
            "reclaim_latencies": latencies,
        }

    def run_b2(self):
        cfg = self.cfg
        rows = {name: {"system": name, "runs": []} for name in self.avail()}
        for rep in range(cfg["b2_repeats"]):
            log(
                f"B2 chaos repeat {rep + 1}/{cfg['b2_repeats']}: {cfg['b2_tasks']} tasks x {cfg['b2_task_s']}s, "
                f"{cfg['b2_workers']} workers, SIGKILL every {cfg['b2_kill_every']}s; systems side by side"
            )
            threads = []

            def one(name, rep):
                try:
                    r = self.b2_once(name, rep)
                except Exception as exc:  # noqa: BLE001 - one system's failure must not stop the others
                    r = {"error": f"{type(exc).__name__}: {exc}"}
                rows[name]["runs"].append(r)
                if "error" in r:
                    log(f"B2 {name} r{rep}: ERROR {r['error'][:300]}")
                else:
                    end = " (TIMED OUT)" if r["timed_out"] else " (STUCK: no progress for 10 s)" if r["stuck"] else ""
                    log(
                        f"B2 {name} r{rep}: ended after {r['drain_s']:.1f}s{end}, crashes={r['worker_crashes']}"
                        f", kills={r['kills']} lost={r['lost']} dup_exec={r['dup_exec']} "
                        f"dup_accepted={r['dup_accepted']} reclaim_p50={r['reclaim_p50_s']} "
                        f"integrity={r['integrity']}"
                    )

            for name in self.avail():
                th = threading.Thread(target=one, args=(name, rep))
                th.start()
                threads.append(th)
            for th in threads:
                th.join()
        for name, row in rows.items():
            good = [r for r in row["runs"] if "error" not in r]
            if not good:
                row["error"] = row["runs"][0]["error"] if row["runs"] else "no run"
                continue
            row["n_runs"] = len(good)
            for key in (
                "lost",
                "dup_exec",
                "dup_accepted",
                "rejected_completions",
                "reexecutions",
                "kills",
                "killed_holding",
                "unreclaimed",
            ):
                row[key] = sum(r[key] for r in good)
            row["reclaim_p50_s"] = med([x for r in good for x in r["reclaim_latencies"]])
            row["reclaim_max_s"] = max([x for r in good for x in r["reclaim_latencies"]], default=None)
            row["drain_s"] = med([r["drain_s"] for r in good])
            row["timed_out"] = sum(1 for r in good if r["timed_out"])
            row["stuck"] = sum(1 for r in good if r["stuck"])
            row["worker_crashes"] = sum(r["worker_crashes"] for r in good)
            row["crash_sample"] = next((r["crash_sample"] for r in good if r["crash_sample"]), None)
            row["integrity"] = (
                "ok"
                if all(r["integrity"] == "ok" for r in good)
                else "; ".join(r["integrity"] for r in good if r["integrity"] != "ok")
            )
            row["recovery"] = self.info[name]["recovery_desc"]
        self.results["b2"] = [rows[n] for n in self.avail()]

    # ---- B2 stall (SIGSTOP / SIGCONT) -----------------------------------------------------------------------
    def stall_once(self, name):
        cfg = self.cfg
        K = cfg["stall_k"]
        lease = cfg["lease"]
        cell, ids = self.fresh_board(name, K, "stall")
        stop = cell / "stop"
        monitor = self.start_monitor(name, cell, lease, cell / "status.json", stop)
        a_procs, b_procs = [], []
        res = {"k": K}
        try:
            if err := wait_ready([monitor], 180):
                return {"error": err}
            held = {}  # tid -> (A proc, t_stop)
            for i in range(K):
                a = self.spawn(name, "stall", cell, f"a{i}", stdin=False, lease=lease, hold=1.0, claim_timeout=20)
                a_procs.append(a)
                if err := wait_ready([a], 180):
                    return {"error": err}
                t, line = a.next_line(30)
                if not line or not line.startswith("S "):
                    return {"error": f"A{i} did not claim: {line} {a.stderr_tail()}"}
                a.kill(signal.SIGSTOP)
                held[line.split()[1]] = (a, time.time())
            t_stopped = time.time()
            hb_every = lease / 4
            for i in range(K):
                b = self.spawn(
                    name,
                    "stall",
                    cell,
                    f"b{i}",
                    stdin=False,
                    lease=lease,
                    hold=2.0,
                    heartbeat_every=hb_every,
                    claim_timeout=lease + 6,
                )
                b_procs.append(b)
            if err := wait_ready(b_procs, 180):
                return {"error": err}
            takeovers = {}
            no_claim = 0
            for b in b_procs:
                t, line = b.next_line(lease + 30)
                if line and line.startswith("S "):
                    tid = line.split()[1]
                    takeovers[tid] = t - held.get(tid, (None, t_stopped))[1]
                else:
                    no_claim += 1
            for a, _ in held.values():
                a.kill(signal.SIGCONT)
            a_acc = {}
            for tid, (a, _) in held.items():
                t, line = a.next_line(30)
                a_acc[tid] = int(line.split()[3]) if line and line.startswith("F ") else None
            b_acc = {}
            for b in b_procs:
                t, line = b.next_line(30)
                if line and line.startswith("F "):
                    b_acc[line.split()[1]] = int(line.split()[3])
            res.update(
                {
                    "takeovers": len(takeovers),
                    "no_claim": no_claim,
                    "takeover_p50_s": med(list(takeovers.values())),
                    "stale_attempts": sum(1 for tid in takeovers if a_acc.get(tid) is not None),
                    "stale_accepted": sum(1 for tid in takeovers if a_acc.get(tid) == 1),
                    "paused_completed_without_takeover": sum(
                        1 for tid, acc in a_acc.items() if tid not in takeovers and acc == 1
                    ),
                    "new_owner_accepted": sum(b_acc.values()),
                    "both_accepted": sum(1 for tid in takeovers if a_acc.get(tid) == 1 and b_acc.get(tid) == 1),
                }
            )
        finally:
            stop.touch()
            for pr in a_procs:
                pr.kill(signal.SIGCONT)
            for pr in a_procs + b_procs + [monitor]:
                pr.wait(15)
                pr.close()
        v = self.verify(name, cell)
        res["verify"] = v
        res["integrity"] = v["integrity"]
        self.done_with(cell)
        return res

    def run_stall(self):
        rows = {}
        log(
            f"B2 stall: {self.cfg['stall_k']} workers SIGSTOPped right after claiming, lease {self.cfg['lease']}s; "
            "systems side by side"
        )

        def one(name):
            try:
                r = self.stall_once(name)
            except Exception as exc:  # noqa: BLE001
                r = {"error": f"{type(exc).__name__}: {exc}"}
            r["system"] = name
            rows[name] = r
            log(f"stall {name}: " + json.dumps({k: v for k, v in r.items() if k not in ("verify",)}))

        threads = [threading.Thread(target=one, args=(n,)) for n in self.avail()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.results["stall"] = [rows[n] for n in self.avail()]

    # ---- B3 observer contention -----------------------------------------------------------------------------
    def b3_cell(self, name, size, rep):
        cfg = self.cfg
        cell, ids = self.fresh_board(name, size, f"b3-{size}-r{rep}")
        procs = []
        try:
            obs = self.spawn(name, "observer", cell, "observer", interval=0.25, out=cell / "observer.json")
            if err := wait_ready([obs], 180):
                obs.close()
                return {"na" if err.startswith("NOTSUPPORTED") else "error": err}
            procs.append(obs)
            wr = self.spawn(name, "writer", cell, "writer", interval=0.2, out=cell / "writer.json")
            procs.append(wr)
            workers = [self.spawn(name, "burn", cell, f"w{k}", lease=60, out=cell / f"w{k}.json") for k in range(2)]
            procs += workers
            if err := wait_ready(procs[1:], 300):
                return {"error": err}
            t_go = time.time() + 0.3
            for pr in procs:
                pr.send(f"go {t_go} {t_go + cfg['b3_duration']}")
            for pr in procs:
                pr.wait(cfg["b3_duration"] + 120)
            o = json.loads((cell / "observer.json").read_text())
            w = json.loads((cell / "writer.json").read_text())
            ws = [json.loads((cell / f"w{k}.json").read_text()) for k in range(2)]
        except (OSError, ValueError) as exc:
            return {"error": f"{exc}: " + " | ".join(p.stderr_tail(300) for p in procs)}
        finally:
            for pr in procs:
                pr.close()
        v = self.verify(name, cell)
        self.done_with(cell, keep=v["integrity"] != "ok")
        return {
            "observer_p50_ms": ms(pct(o["lat"], 50)),
            "observer_p99_ms": ms(pct(o["lat"], 99)),
            "observer_max_ms": ms(max(o["lat"])) if o["lat"] else None,
            "observer_reads": len(o["lat"]),
            "writer_p50_ms": ms(pct(w["lat"], 50)),
            "writer_p99_ms": ms(pct(w["lat"], 99)),
            "writer_adds": len(w["lat"]),
            "busy_observer": o["busy"],
            "busy_writer": w["busy"],
            "busy_workers": sum(x["busy"] for x in ws),
            "errors": o["errors"] + w["errors"] + sum(x["errors"] for x in ws),
            "error_samples": (o["error_samples"] + w["error_samples"])[:5],
            "worker_tasks_per_s": sum(len(x["completed"]) for x in ws) / cfg["b3_duration"],
            "fatal": [x["fatal"] for x in [o, w, *ws] if x.get("fatal")],
            "integrity": v["integrity"],
        }

    def run_b3(self):
        cfg = self.cfg
        runs: dict[tuple, list] = {}
        supported = [n for n in self.avail() if not self.info[n].get("summary")]
        for rep in range(cfg["b3_repeats"]):
            for size in cfg["b3_sizes"]:
                for name in supported:
                    prev = runs.get((name, size), [])
                    if prev and ("na" in prev[-1] or "error" in prev[-1]):
                        continue
                    r = self.b3_cell(name, size, rep)
                    runs.setdefault((name, size), []).append(r)
                    log(
                        f"B3 {name} {size} r{rep}: "
                        + json.dumps(
                            {
                                k: (round(v, 2) if isinstance(v, float) else v)
                                for k, v in r.items()
                                if k != "error_samples"
                            }
                        )[:600]
                    )
        rows = []
        for name in self.avail():
            for size in cfg["b3_sizes"]:
                row = {"system": name, "size": size}
                na = self.info[name].get("summary")
                if na:
                    row["na"] = na
                    rows.append(row)
                    continue
                cell_runs = runs.get((name, size), [])
                row["runs"] = cell_runs
                good = [r for r in cell_runs if "na" not in r and "error" not in r]
                if not good:
                    row.update({k: cell_runs[0][k] for k in ("na", "error") if k in cell_runs[0]})
                else:
                    for key in (
                        "observer_p50_ms",
                        "observer_p99_ms",
                        "writer_p50_ms",
                        "writer_p99_ms",
                        "worker_tasks_per_s",
                    ):
                        row[key] = med([r[key] for r in good])
                    row["observer_max_ms"] = max(r["observer_max_ms"] or 0 for r in good)
                    for key in (
                        "busy_observer",
                        "busy_writer",
                        "busy_workers",
                        "errors",
                        "observer_reads",
                        "writer_adds",
                    ):
                        row[key] = sum(r[key] for r in good)
                    row["fatal"] = [f for r in good for f in r.get("fatal", [])]
                    row["integrity"] = "ok" if all(r["integrity"] == "ok" for r in good) else "FAIL"
                    row["n_runs"] = len(good)
                rows.append(row)
        self.results["b3"] = rows

    # ---- physical limit -------------------------------------------------------------------------------------
    def strace_syncs(self, name, n_tasks, use_next=False):
        """fsync+fdatasync calls made by one FULL-mode worker doing n_tasks claim->complete (via strace -c)."""
        cell, _ = self.fresh_board(name, self.cfg["b1_board"], f"strace{'next' if use_next else ''}-{n_tasks}")
        out = cell / "strace.txt"
        args = [
            "strace",
            "-f",
            "-c",
            "-o",
            str(out),
            "-e",
            "trace=fsync,fdatasync",
            str(self.py[name]),
            str(WORKER),
            "burn",
            "--adapter",
            name,
            "--dir",
            str(cell / "board"),
            "--durability",
            "full",
            "--lease",
            "60",
            "--out",
            str(cell / "w.json"),
            "--stop-on-empty",
            "--max-tasks",
            str(n_tasks),
        ] + (["--next"] if use_next else [])
        with open(cell / "strace.stderr", "wb") as err:
            p = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env()
            )
            line = p.stdout.readline()
            if line.strip() != "ready":
                p.kill()
                p.wait()
                raise RuntimeError(f"strace worker not ready: {(cell / 'strace.stderr').read_text()[-300:]}")
            t = time.time()
            p.stdin.write(f"go {t} {t + 600}\n")
            p.stdin.flush()
            p.wait(600)
        done = len(json.loads((cell / "w.json").read_text())["completed"])
        calls = 0
        for line in out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync"):
                calls += int(parts[3])
        self.done_with(cell)
        return calls, done

    def run_physical(self):
        fs = self.results.get("fsync")
        rows = []
        have_strace = shutil.which("strace") is not None
        b1 = {(r["system"], r["durability"], r["workers"]): r for r in self.results.get("b1", [])}
        for name in self.avail():
            row = {"system": name}
            if self.durability_na(name, "full"):
                row["na"] = self.durability_na(name, "full")
                rows.append(row)
                continue
            if have_strace:
                try:
                    c0, d0 = self.strace_syncs(name, 0)
                    c1, d1 = self.strace_syncs(name, self.cfg["strace_tasks"])
                    row["syncs_per_task"] = (c1 - c0) / d1 if d1 else None
                    row["syncs_baseline"] = c0
                except Exception as exc:  # noqa: BLE001
                    row["syncs_per_task"] = None
                    row["strace_error"] = str(exc)[:300]
            else:
                row["strace_error"] = "n/a: strace not installed"
            one = b1.get((name, "full", 1), {})
            best = max(
                (
                    r
                    for r in self.results.get("b1", [])
                    if r["system"] == name and r["durability"] == "full" and r.get("tasks_per_s")
                ),
                key=lambda r: r["tasks_per_s"],
                default={},
            )
            row["tasks_per_s_w1"] = one.get("tasks_per_s")
            nxt = next((r for r in self.results.get("b1_next", []) if r["system"] == name and r["workers"] == 1), None)
            if nxt and nxt.get("tasks_per_s") and have_strace:
                try:
                    n0, e0 = self.strace_syncs(name, 0, use_next=True)
                    n1, e1 = self.strace_syncs(name, self.cfg["strace_tasks"], use_next=True)
                    row["syncs_per_task_next"] = (n1 - n0) / e1 if e1 else None
                except Exception as exc:  # noqa: BLE001
                    row["strace_error_next"] = str(exc)[:300]
                row["tasks_per_s_w1_next"] = nxt["tasks_per_s"]
                spn = row.get("syncs_per_task_next")
                if fs and spn is not None:
                    row["syncs_per_s_w1_next"] = nxt["tasks_per_s"] * spn
                    row["fraction_w1_next"] = nxt["tasks_per_s"] * spn / fs["ceiling_per_s"]
            row["tasks_per_s_best"] = best.get("tasks_per_s")
            row["best_workers"] = best.get("workers")
            spt = row.get("syncs_per_task")
            if fs and spt is not None:
                for tag in ("w1", "best"):
                    rate = row[f"tasks_per_s_{tag}"]
                    if rate:
                        row[f"syncs_per_s_{tag}"] = rate * spt
                        row[f"fraction_{tag}"] = rate * spt / fs["ceiling_per_s"]
            rows.append(row)
            log(f"physical {name}: " + json.dumps({k: v for k, v in row.items() if k != "system"}))
        self.results["physical"] = rows

    def close(self):
        for h in self.helpers.values():
            h.close()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(headers, rows):
    """Fixed-width table; cells are single-line, rows shorter than the header are padded, the last column is free
    (it carries the long n/a reasons)."""
    cells = [[str(c).replace("\n", " ") for c in r] + [""] * (len(headers) - len(r)) for r in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    widths[-1] = len(str(headers[-1]))
    lines = [
        "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def render_ratios(res: dict, ours: str = "hermes-kanban", peers: tuple[str, ...] = ("huey", "persist-queue")) -> str:
    """B1 at FULL: our tasks/s over each peer's, per worker count (>= 1.00 means we are at least as fast), for the
    plain claim -> complete loop and for --next; and our own fall-off from 1 worker."""
    full = {
        (r["system"], r["workers"]): r.get("tasks_per_s") for r in res.get("b1", []) if r.get("durability") == "full"
    }
    nxt = {r["workers"]: r.get("tasks_per_s") for r in res.get("b1_next", []) if r["system"] == ours}
    workers = sorted({w for (n, w) in full if n == ours} | set(nxt))
    present = [p for p in peers if any(n == p for n, _ in full)]
    if not workers or not (present or nxt):
        return ""

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"

    headers = ["W", ours]
    headers += [f"/{p}" for p in present]
    headers += ["vs W=1"]
    if nxt:
        headers += [f"{ours} --next"] + [f"--next/{p}" for p in present] + ["--next vs W=1"]
    rows = []
    for w in workers:
        mine = full.get((ours, w))
        row = [w, fmt(mine, 0)] + [ratio(mine, full.get((p, w))) for p in present]
        base = full.get((ours, workers[0]))
        row.append(f"{mine / base - 1:+.0%}" if mine and base else "-")
        if nxt:
            n = nxt.get(w)
            row += [fmt(n, 0)] + [ratio(n, full.get((p, w))) for p in present]
            nb = nxt.get(workers[0])
            row.append(f"{n / nb - 1:+.0%}" if n and nb else "-")
        rows.append(row)
    return "\nB1 FULL ratios (ours / peer tasks/s; >= 1.00 = at least as fast)\n" + table(headers, rows)


def render(res: dict) -> str:
    out = []
    meta = res["meta"]
    out.append(
        f"hermes kanban peer comparison — {meta['date']} — {meta['host']}, {meta['cpus']} cpus, "
        f"python {meta['python']}, profile {meta['profile']}"
    )
    for note in res["notes"]:
        out.append(f"NOTE: {note}")
    out.append("systems: " + ", ".join(f"{n} {i['version']} (sqlite {i['sqlite']})" for n, i in res["systems"].items()))
    for n, why in res.get("unavailable", {}).items():
        out.append(f"  {n}: {why}")
    if "fsync" in res:
        f = res["fsync"]
        out.append(
            f"\nfsync probe ({f['fs_type']}, 4 KiB pwrite+fdatasync, {f['probes']} probes, {f['n']} syncs): "
            f"median p50 {f['p50_ms']:.3f} ms (probes {f['p50_range_ms'][0]:.3f}..{f['p50_range_ms'][1]:.3f}), "
            f"p99 {f['p99_ms']:.3f} ms -> ceiling {f['ceiling_per_s']:.0f} commits/s"
        )
    if res.get("b1"):
        c = res["config"]
        out.append(
            f"\nB1 burn-down: board of {c['b1_board']} no-op tasks, "
            + (f"{c['b1_window']} s window per run" if c["b1_window"] else "drained completely")
            + f", median of {c['repeats']} run(s); latency in ms; busy/dups summed over runs"
        )
        rows = []
        for r in res["b1"]:
            if "na" in r:
                rows.append([r["system"], r["durability"], r["workers"], "n/a", "", "", "", "", "", r["na"]])
            elif "error" in r:
                rows.append([r["system"], r["durability"], r["workers"], "ERROR", "", "", "", "", "", r["error"][:200]])
            else:
                rows.append(
                    [
                        r["system"],
                        r["durability"],
                        r["workers"],
                        fmt(r["tasks_per_s"], 0),
                        fmt(r["claim_p50_ms"], 2),
                        fmt(r["claim_p99_ms"], 2),
                        fmt(r["complete_p50_ms"], 2),
                        fmt(r["complete_p99_ms"], 2),
                        r["busy"],
                        "ok" if r["correct"] else "FAIL: " + "; ".join(r["problems"])[:160],
                    ]
                )
        out.append(
            table(
                [
                    "system",
                    "sync",
                    "W",
                    "tasks/s",
                    "claim p50",
                    "claim p99",
                    "compl p50",
                    "compl p99",
                    "busy",
                    "exactly-once",
                ],
                rows,
            )
        )
    if res.get("b1_next"):
        out.append(
            "\nB1 --next (complete and claim the next in ONE transaction: one commit per task), FULL, same boards "
            "and windows"
        )
        rows = []
        for r in res["b1_next"]:
            if "error" in r:
                rows.append([r["system"], r["workers"], "ERROR", "", "", "", r["error"][:200]])
                continue
            rows.append(
                [
                    r["system"],
                    r["workers"],
                    fmt(r["tasks_per_s"], 0),
                    fmt(r["complete_p50_ms"], 2),
                    fmt(r["complete_p99_ms"], 2),
                    r["busy"],
                    "ok" if r["correct"] else "FAIL: " + "; ".join(r["problems"])[:160],
                ]
            )
        headers = ["system", "W", "tasks/s", "compl+claim p50", "compl+claim p99", "busy", "exactly-once"]
        out.append(table(headers, rows))
    ratio_text = render_ratios(res)
    if ratio_text:
        out.append(ratio_text)
    if res.get("b2"):
        c = res["config"]
        out.append(
            f"\nB2 chaos: {c['b2_tasks']} tasks x {c['b2_task_s']} s, {c['b2_workers']} workers, one SIGKILLed "
            f"every {c['b2_kill_every']} s and respawned, lease/threshold {c['lease']} s; {c['b2_repeats']} "
            "run(s), counts summed, reclaim = kill -> task claimed again (median/max)"
        )
        rows = []
        for r in res["b2"]:
            if "error" in r:
                rows.append([r["system"], "ERROR"] + [""] * 7 + [r["error"][:200]])
                continue
            ended = fmt(r["drain_s"], 1)
            if r["timed_out"]:
                ended += f" ({r['timed_out']} timed out)"
            if r["stuck"]:
                ended += f" ({r['stuck']} stuck)"
            rows.append(
                [
                    r["system"],
                    r["kills"],
                    r["worker_crashes"],
                    r["lost"],
                    r["dup_exec"],
                    r["dup_accepted"],
                    f"{fmt(r['reclaim_p50_s'], 2)}/{fmt(r['reclaim_max_s'], 2)}",
                    f"{r['unreclaimed']}/{r['killed_holding']}",
                    ended,
                    r["integrity"][:60],
                ]
            )
        out.append(
            table(
                [
                    "system",
                    "kills",
                    "crashes",
                    "lost",
                    "dup exec",
                    "dup accepted",
                    "reclaim s p50/max",
                    "unreclaimed/held",
                    "drain s",
                    "integrity",
                ],
                rows,
            )
        )
    if res.get("stall"):
        out.append(
            "\nB2 stall: a worker SIGSTOPped while holding a task past the lease, another worker takes it "
            "over, the paused one is SIGCONTed and completes"
        )
        rows = []
        for r in res["stall"]:
            if "error" in r:
                rows.append([r["system"], "ERROR", "", "", "", "", r["error"][:200]])
                continue
            stale = f"{r['stale_accepted']}/{r['stale_attempts']}" if r["takeovers"] else "n/a (no takeover)"
            rows.append(
                [
                    r["system"],
                    f"{r['takeovers']}/{r['k']}",
                    fmt(r["takeover_p50_s"], 2),
                    stale,
                    f"{r['new_owner_accepted']}",
                    r["both_accepted"],
                    r["integrity"],
                ]
            )
        out.append(
            table(
                [
                    "system",
                    "takeovers",
                    "takeover s",
                    "stale accepted",
                    "new owner accepted",
                    "both accepted",
                    "integrity",
                ],
                rows,
            )
        )
    if res.get("b3"):
        c = res["config"]
        out.append(
            f"\nB3 observer contention: 2 workers burning, 1 writer adding 5 tasks/s, 1 observer reading the "
            f"board summary every 250 ms, {c['b3_duration']} s, median of {c['b3_repeats']} run(s); ms"
        )
        rows = []
        for r in res["b3"]:
            if "na" in r or "error" in r:
                label = "n/a" if "na" in r else "ERROR"
                rows.append([r["system"], r["size"], label] + [""] * 6 + [r.get("na") or r["error"][:200]])
                continue
            rows.append(
                [
                    r["system"],
                    r["size"],
                    fmt(r["observer_p50_ms"], 2),
                    fmt(r["observer_p99_ms"], 2),
                    fmt(r["writer_p50_ms"], 2),
                    fmt(r["writer_p99_ms"], 2),
                    f"{r['observer_reads']}/{r['writer_adds']}",
                    f"{r['busy_observer']}/{r['busy_writer']}/{r['busy_workers']}",
                    fmt(r["worker_tasks_per_s"], 0),
                    r["integrity"],
                ]
            )
        out.append(
            table(
                [
                    "system",
                    "board",
                    "obs p50",
                    "obs p99",
                    "write p50",
                    "write p99",
                    "reads/adds",
                    "busy o/w/workers",
                    "worker tasks/s",
                    "integrity",
                ],
                rows,
            )
        )
    if res.get("physical"):
        f = res.get("fsync") or {}
        out.append(
            f"\nPhysical limit: ceiling 1/fsync = {fmt(f.get('ceiling_per_s'), 0)} syncs/s; syncs/task counted "
            "with strace (fsync+fdatasync, FULL, 1 worker); fraction = tasks/s x syncs/task / ceiling "
            "(W > 1 can exceed 1: fsyncs from several processes overlap)"
        )
        rows = []
        for r in res["physical"]:
            if "na" in r:
                rows.append([r["system"], "n/a"] + [""] * 4 + [r["na"]])
                continue
            rows.append(
                [
                    r["system"],
                    fmt(r.get("syncs_per_task"), 2)
                    if r.get("syncs_per_task") is not None
                    else r.get("strace_error", "-")[:40],
                    fmt(r.get("tasks_per_s_w1"), 0),
                    fmt(r.get("syncs_per_s_w1"), 0),
                    fmt(r.get("fraction_w1"), 3),
                    f"{fmt(r.get('tasks_per_s_best'), 0)} (W={r.get('best_workers')})",
                    fmt(r.get("fraction_best"), 3),
                ]
            )
        out.append(
            table(
                ["system", "syncs/task", "tasks/s W=1", "syncs/s W=1", "fraction W=1", "tasks/s best", "fraction best"],
                rows,
            )
        )
    for r in res.get("physical", []):
        if r.get("fraction_w1_next") is not None:
            out.append(
                f"{r['system']} --next at W=1: {fmt(r['tasks_per_s_w1_next'], 0)} tasks/s x "
                f"{fmt(r['syncs_per_task_next'], 2)} syncs/task = {fmt(r['syncs_per_s_w1_next'], 0)} syncs/s = "
                f"{fmt(r['fraction_w1_next'], 3)} of the fsync ceiling (issue 12 target: >= 0.6)"
            )
        elif r.get("strace_error_next"):
            out.append(f"{r['system']} --next: syncs not counted ({r['strace_error_next'][:120]})")
    m = res["meta"]
    out.append(
        f"\nwall time: {m['wall_s']:.0f} s total = venv setup {m['setup_s']:.0f} s + template seeding "
        f"{m['seeding_s'] or 0:.0f} s + measurements {m['measure_s']:.0f} s"
    )
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small boards, 1 repeat: a smoke test, not for publication")
    p.add_argument("--out", default=None, help="write all results as JSON here (default bench/results/<ts>.json)")
    p.add_argument("--systems", default=",".join(ORDER), help="comma list, default all: " + ",".join(ORDER))
    p.add_argument(
        "--scenarios",
        default="fsync,b1,next,b2,stall,b3,physical",
        help="comma list of fsync,b1,next,b2,stall,b3,physical (physical uses b1's numbers; next = B1 at FULL "
        "with complete-and-claim in one transaction, for the systems that have it)",
    )
    p.add_argument("--repeats", type=int, help="B1 runs per cell (median reported)")
    p.add_argument("--b1-board", type=int, help="B1 board size")
    p.add_argument("--b1-window", type=float, help="B1 seconds per run; 0 = drain the whole board")
    p.add_argument("--b2-repeats", type=int)
    p.add_argument("--b3-repeats", type=int)
    p.add_argument("--b3-sizes", help="comma list of B3 board sizes")
    p.add_argument("--venv-dir", default=str(BENCH / ".venvs"))
    p.add_argument(
        "--cache-dir",
        default=str(BENCH / ".cache"),
        help="seeded template boards and the scratch boards of the run (same disk is measured)",
    )
    p.add_argument("--keep", action="store_true", help="keep every scratch board and log")
    args = p.parse_args()

    known = ("fsync", "b1", "next", "b2", "stall", "b3", "physical")
    bad = [s for s in args.scenarios.split(",") if s not in known]
    if bad:
        p.error(f"unknown scenario(s) {', '.join(bad)}; known: {', '.join(known)}")
    unknown = [s for s in args.systems.split(",") if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    bench = Bench(args)
    scenarios = args.scenarios.split(",")
    load_start = os.getloadavg()
    t_setup = time.time()
    bench.setup()
    t0 = time.time()
    res = bench.results
    try:
        # seed all templates first, so seeding is not inside any measurement
        for name in bench.avail():
            sizes = set()
            if "b1" in scenarios or "next" in scenarios or "physical" in scenarios:
                sizes.add(bench.cfg["b1_board"])
            if "b2" in scenarios:
                sizes.add(bench.cfg["b2_tasks"])
            if "b3" in scenarios and not bench.info[name].get("summary"):
                sizes.update(bench.cfg["b3_sizes"])
            for n in sorted(sizes):
                bench.template(name, n)
        t_seeded = time.time()
        res["seed_seconds"] = round(t_seeded - t0, 1)
        probe = "fsync" in scenarios or "physical" in scenarios
        if probe:
            bench.fsync_probe("start")
        if "b1" in scenarios or "next" in scenarios:
            bench.run_b1(with_b1="b1" in scenarios, with_next="next" in scenarios)
            if probe:
                bench.fsync_probe("after B1")
        if "b2" in scenarios:
            bench.run_b2()
        if "stall" in scenarios:
            bench.run_stall()
        if "b3" in scenarios:
            bench.run_b3()
        if probe:
            bench.fsync_probe("end")
        if "physical" in scenarios:
            bench.run_physical()
    finally:
        bench.close()
    t_done = time.time()
    wall = t_done - t_setup
    cfg = bench.cfg
    if os.environ.get("BENCH_HERMES_AGENT_NO_LENGTH_PROBE") == "1":
        res["notes"].append(
            "DIAGNOSTIC RUN: hermes-agent's post-commit file-length probe was disabled "
            "(BENCH_HERMES_AGENT_NO_LENGTH_PROBE=1); its figures are NOT the shipped 0.19.0 behaviour"
        )
    if args.quick:
        res["notes"].append("QUICK MODE: small boards and 1 repeat — a smoke test of the harness, not a result")
    if cfg["b1_window"] and cfg["b1_board"] > 0:
        res["notes"].append(
            f"B1 is scaled to fit the 10-minute budget: each run measures a {cfg['b1_window']} s "
            f"window on a {cfg['b1_board']}-task board instead of draining it "
            "(use --b1-window 0 to drain)"
        )
    load_end = os.getloadavg()
    if load_start[0] > 0.5:
        res["notes"].append(
            f"the machine was busy when the run started (load average {load_start[0]:.2f}): "
            "other processes compete for the 2 cores and the disk; compare runs with care"
        )
    if wall > 600:
        res["notes"].append(f"over budget: the run took {wall:.0f} s (> 600 s)")
    res["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "profile": "quick" if args.quick else "full",
        "wall_s": wall,
        "setup_s": t0 - t_setup,
        "seeding_s": res.get("seed_seconds"),
        "measure_s": t_done - t0 - (res.get("seed_seconds") or 0),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    res["config"] = cfg
    res["systems"] = bench.info
    res["unavailable"] = bench.unavailable
    text = render(res)
    res["table"] = text
    out = Path(args.out) if args.out else BENCH / "results" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    print(text)
    log(f"results written to {out}")


if __name__ == "__main__":
    main()
