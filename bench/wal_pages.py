"""Which pages one claim, one complete and one complete+claim transaction write to the WAL, by b-tree.

    python bench/wal_pages.py              # 2000 ready tasks, 20 transactions of each kind, mean pages per kind
    python bench/wal_pages.py -n 20000 --show 2

Every frame of a WAL commit is a page image (4 KiB here) that COMMIT writes and checksums, and at synchronous=FULL
syncs: pages per commit are most of a commit's cost once the statements themselves are cheap. Method: the WAL is
checkpointed (TRUNCATE) before each transaction, so after it the -wal file holds exactly that transaction's frames;
a child process (which holds no connection, so reading the file cannot drop anyone's POSIX locks) reads the frame
headers' page numbers, and the `dbstat` virtual table names the b-tree each page belongs to.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_READ_FRAMES = """
import struct, sys
data = open(sys.argv[1], 'rb').read()
size = struct.unpack('>I', data[8:12])[0] if len(data) >= 32 else 0
pages = []
off = 32
while size and off + 24 + size <= len(data):
    pages.append(struct.unpack('>I', data[off:off + 4])[0])
    off += 24 + size
print(' '.join(map(str, pages)))
"""


def _frames(wal: Path) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _READ_FRAMES, str(wal)], capture_output=True, text=True, check=True)
    return [int(p) for p in out.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--tasks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--show", type=int, default=1, help="transactions of each kind listed page by page")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hk-walpages-") as tmp:
        os.environ["HERMES_HOME"] = tmp
        os.environ["HERMES_KANBAN_SYNCHRONOUS"] = "normal"
        from hermes_cli.kanban import Board

        b = Board.open()

        def seed() -> None:
            for i in range(args.tasks):
                b.create_task(f"wal task {i}", priority=i % 7)

        b.db.write(seed)
        wal = Path(str(b.db.paths.db) + "-wal")
        conn = b.db.conn

        def owners() -> dict[int, str]:
            return {int(p): str(n) for n, p in conn.execute("SELECT name, pageno FROM dbstat")}

        def measure(label: str, op) -> Counter[str]:  # type: ignore[no-untyped-def]
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            op()
            pages = _frames(wal)
            names = owners()
            return Counter(names.get(p, f"page {p}") for p in pages)

        claimed: list[tuple[str, int]] = []

        def claim() -> None:
            t = b.claim(worker="w")
            assert t is not None
            claimed.append((t.task_id, t.run_id))

        def complete() -> None:
            tid, run = claimed.pop()
            b.complete(tid, summary="ok", run_id=run)

        def complete_next() -> None:
            tid, run = claimed.pop()
            _, nxt = b.complete_next(tid, run, summary="ok", worker="w")
            assert nxt is not None
            claimed.append((nxt.task_id, nxt.run_id))

        for label, op in (("claim", claim), ("complete", complete)):
            totals: Counter[str] = Counter()
            for i in range(args.rounds):
                if label == "complete" and not claimed:
                    claim()
                got = measure(label, op)
                totals.update(got)
                if i < args.show:
                    print(f"{label}: {sum(got.values())} frames: {dict(got)}")
            print(f"{label}: mean {sum(totals.values()) / args.rounds:.1f} frames per transaction")
        if hasattr(b, "complete_next"):
            claim()
            totals = Counter()
            for i in range(args.rounds):
                got = measure("complete+claim", complete_next)
                totals.update(got)
                if i < args.show:
                    print(f"complete+claim: {sum(got.values())} frames: {dict(got)}")
            print(f"complete+claim: mean {sum(totals.values()) / args.rounds:.1f} frames per transaction")
            print("mean by b-tree (complete+claim):",
                  {k: round(v / args.rounds, 2) for k, v in totals.most_common()})
        b.close()


if __name__ == "__main__":
    main()
