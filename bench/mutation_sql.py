"""Run the hand-written SQL mutants of bench/mutation/sql.toml (see its header); called by bench/mutation.sh sql.

    python bench/mutation_sql.py bench/mutation/sql.toml RESULTS.json

Run it in a snapshot of the tree (bench/mutation.sh does): each mutant edits a source file in place and puts it
back afterwards. Prints one line per mutant and writes the results as JSON; exits 1 if any mutant survived or no
longer applies (its `find` text is not in the file exactly once: update sql.toml).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path


def run(command: str, timeout: float) -> tuple[str, float, str]:
    start = time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # a stale .pyc must never hide the edited source
    p = subprocess.Popen(shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return "killed", time.monotonic() - start, "timeout"
    return ("survived" if p.returncode == 0 else "killed"), time.monotonic() - start, out[-2000:]


def main(argv: list[str]) -> int:
    config = tomllib.loads(Path(argv[0]).read_text(encoding="utf-8"))
    results = []
    for m in config["mutant"]:
        path = Path(m["file"])
        source = path.read_text(encoding="utf-8")
        if source.count(m["find"]) != 1:
            results.append({**m, "outcome": "stale", "seconds": 0.0, "output": "find text not found exactly once"})
            print(f"stale    {m['id']}: {m['file']} no longer has {m['find']!r} exactly once", flush=True)
            continue
        path.write_text(source.replace(m["find"], m["replace"]), encoding="utf-8")
        try:
            outcome, took, out = run(m.get("tests", config["test-command"]), float(config.get("timeout", 240)))
        finally:
            path.write_text(source, encoding="utf-8")
        results.append({**m, "outcome": outcome, "seconds": round(took, 1), "output": out})
        print(f"{outcome:8} {m['id']}: {m['why']} ({took:.0f} s)", flush=True)
    if len(argv) > 1:
        Path(argv[1]).write_text(json.dumps(results, indent=1), encoding="utf-8")
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("killed", "survived", "stale")}
    print(f"sql mutants: {counts['killed']} killed, {counts['survived']} survived, {counts['stale']} stale")
    return 0 if counts["survived"] == counts["stale"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
