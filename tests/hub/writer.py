"""A board writer for the hub tests: `python -m tests.hub.writer SLUG EVENTS [PAUSE_S]` makes changes of every kind
(create, comment, edit, claim, complete, archive, delete) until the board has written EVENTS events, then prints the
last event id. Each change is its own transaction, as a fleet's workers make them."""

from __future__ import annotations

import random
import sys
import time

from hermes_cli.kanban import Board


def main() -> None:
    slug, target = sys.argv[1], int(sys.argv[2])
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    rng = random.Random(target)
    with Board.open(slug, create=True) as b:
        done: list[str] = []
        last = 0
        while last < target:
            t, _ = b.create_task(f"task {last}", body="x" * rng.randint(0, 200), priority=rng.randint(0, 5))
            roll = rng.random()
            if roll < 0.3:
                b.comment(t.id, f"note {last}")
            elif roll < 0.45:
                b.edit(t.id, title=f"task {last} (edited)")
            if rng.random() < 0.6:
                claim = b.claim(t.id, worker="w")
                if claim is not None:
                    b.complete(claim.task_id, claim.run_id, summary="ok")
                    done.append(t.id)
            if len(done) > 5 and rng.random() < 0.2:
                victim = done.pop(rng.randrange(len(done)))
                b.archive(victim)
                if rng.random() < 0.5:
                    b.delete_archived([victim])
            last = int(b.db.value("SELECT coalesce(max(id), 0) FROM events"))
            if pause:
                time.sleep(pause)
    print(last, flush=True)


if __name__ == "__main__":
    main()
