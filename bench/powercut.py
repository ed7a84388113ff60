"""Simulated power cuts against the real board, per `synchronous` mode: the table behind docs/guarantees.md.

Same harness as tests/torture/test_powercut.py (tests/torture/powercut_harness.py explains the model): the
product writes a board through its public API over an APSW VFS that records what was synced; at a random I/O
op the disk image a power cut would leave (synced data + a random, reordered subset of unsynced writes;
directory entries only as far as a directory fsync made them durable; no -shm) is opened with the stock driver
and checked.

Columns: corrupt = integrity_check failed or the file was unreadable; not_prefix = the recovered board matches
no prefix of the calls made (a hole or a partial transaction); cuts_losing_acked / acked_commits_lost = cuts
after which calls that had returned were missing, and how many in total; cuts_in_creation = cuts that landed
before Board.open returned; ops_per_run = I/O ops of a 60-call run (cut points are uniform over them).

    python bench/powercut.py                      # 300 cuts for FULL, NORMAL, OFF, EXTRA python
    bench/powercut.py --cuts 1000 --modes full,normal --seed 7 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "torture"))

import powercut_harness as harness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cuts", type=int, default=300, help="power cuts per mode (default 300)")
    p.add_argument("--modes", default="full,normal,off,extra", help="comma-separated synchronous modes")
    p.add_argument("--seed", type=int, default=None, help="seed for every random choice (default: random, printed)")
    p.add_argument(
        "--cuts-per-run",
        type=int,
        default=1,
        help="cuts taken from one workload run (default 1: every cut gets its own board)",
    )
    p.add_argument(
        "--autocheckpoint",
        type=int,
        default=harness.DEFAULT_AUTOCHECKPOINT,
        help="PRAGMA wal_autocheckpoint of the workload's connection (default 20 pages)",
    )
    p.add_argument(
        "--keep",
        choices=["random", "all"],
        default="random",
        help="random = power cut; all = keep every write (what a SIGKILL leaves), a control",
    )
    p.add_argument(
        "--keep-failures",
        type=int,
        default=0,
        metavar="N",
        help="copy the first N corrupt/not-prefix images of each mode to --workdir/failures",
    )
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir, removed)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = p.parse_args(argv)

    modes = [m.strip().lower() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in harness.MODES]
    if bad:
        p.error(f"unknown mode(s) {', '.join(bad)}: use {', '.join(harness.MODES)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    os.environ.setdefault("HERMES_HOME", tempfile.mkdtemp(prefix="hermes-powercut-home-"))

    results = []
    with tempfile.TemporaryDirectory(prefix="hermes-powercut-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        for mode in modes:
            res = harness.run_mode(
                mode,
                args.cuts,
                workdir / mode,
                seed=seed,
                cuts_per_run=args.cuts_per_run,
                autocheckpoint=args.autocheckpoint,
                keep_failures=args.keep_failures,
                keep=args.keep,
            )
            results.append(res)
            if not args.json:
                print(f"{mode}: {res.cuts} cuts in {res.seconds:.1f}s", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "seed": seed,
                    "keep": args.keep,
                    "autocheckpoint": args.autocheckpoint,
                    "rows": [r.as_row() for r in results],
                },
                indent=2,
            )
        )
    else:
        import apsw

        print(
            f"seed={seed} keep={args.keep} wal_autocheckpoint={args.autocheckpoint} "
            f"cuts_per_run={args.cuts_per_run} SQLite {apsw.sqlite_lib_version()} APSW {apsw.apsw_version()}"
        )
        print(harness.format_table(results))
        for r in results:
            for e in r.examples[:2]:
                print(f"  {r.mode} example: {e.outcome} at op {e.op}, {e.acked} calls acked: {e.detail[:70]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
