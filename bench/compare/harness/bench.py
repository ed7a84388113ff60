"""`Bench`: the state of one run (config, per-system venv pythons and helpers, results) and the scratch boards the
scenarios measure on: seeded templates cached under .cache/templates, a fresh copy per cell, verified afterwards
and deleted (or kept as evidence)."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

from harness.config import ORDER, PROFILES, log
from harness.procs import Helper, Proc
from harness.venvs import ensure_venv


def _copy_regular(src, dst):
    """copytree helper: copy regular files only (a board dir may hold FIFOs, which would block a copy)."""
    if Path(src).is_file():
        shutil.copy2(src, dst)


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

    def durability_na(self, name, durability):
        return self.info[name]["durability"].get(durability)

    # ---- boards -----------------------------------------------------------------------------------------------
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

    # ---- worker processes on a board --------------------------------------------------------------------------
    def spawn(self, name, role, cell: Path, label: str, **opts) -> Proc:
        return Proc(self.py[name], name, role, cell / f"{label}.stderr", dir=cell / "board", **opts)

    def start_monitor(self, name, cell, lease, status_file, stop):
        """The board's monitor process: reports its status every 0.25 s and, for systems whose recovery is a
        periodic tick (lease expiry), runs that recovery on the same tick (B2 chaos and stall)."""
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

    def close(self):
        for h in self.helpers.values():
            h.close()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
