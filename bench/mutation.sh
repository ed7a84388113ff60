#!/usr/bin/env bash
# Mutation testing of the fencing, lease, spool, reconcile, restore and dispatcher-recording code with cosmic-ray
# (pinned in the `test` extra). Slow (minutes to an hour per module on a busy 2-core machine): not part of CI.
#
#   bench/mutation.sh [MODULE ...]          run MODULEs (default: all of them, in the order below)
#   bench/mutation.sh --recheck MODULE ...  re-run only the mutants that survived the last run (after adding tests)
#
# MODULE is the name of a config in bench/mutation/: spool reconcile tasks sql leases backup dispatcher (sql: the
# hand-written mutants of SQL text in bench/mutation/sql.toml, run by bench/mutation_sql.py). Each config
# names the code it mutates, the scope (functions) and the targeted tests that run for every mutant (-x: a mutant
# is killed by the first failing test). Sessions and reports go to bench/results/mutation/ (git-ignored):
# MODULE.sqlite (the cosmic-ray session), MODULE.txt (cr-report) and MODULE.time (wall time).
#
# cosmic-ray edits the mutated file in place, so the run happens in a snapshot of the working tree (tracked and
# untracked, not ignored, files) under a temporary directory, with PYTHONPATH pointing at it: the tests and every
# process they start (the CLI, dispatchers, workers) import the mutated snapshot, never the checkout you work in.
#
# The body is one function, read whole before it runs, so editing this file during a run cannot change that run.
set -euo pipefail

main() {
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
OUT=${MUTATION_OUT:-$ROOT/bench/results/mutation}
ALL=(spool reconcile tasks sql leases backup dispatcher)

recheck=0
if [[ ${1:-} == --recheck ]]; then
    recheck=1
    shift
fi
modules=("$@")
[[ ${#modules[@]} -gt 0 ]] || modules=("${ALL[@]}")
for m in "${modules[@]}"; do
    [[ -f $ROOT/bench/mutation/$m.toml ]] || { echo "error: no config bench/mutation/$m.toml (have: ${ALL[*]})" >&2; exit 2; }
done

mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hermes-mutation.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK")

export PATH="$VENV_BIN:$PATH" PYTHONPATH="$WORK" PYTHONDONTWRITEBYTECODE=1
cd "$WORK"
python -c 'import hermes_cli, os, sys; sys.exit(0 if hermes_cli.__file__.startswith(os.getcwd()) else 1)' \
    || { echo "error: the snapshot's hermes_cli is not the one imported; check PYTHONPATH" >&2; exit 4; }

for m in "${modules[@]}"; do
    cfg=bench/mutation/$m.toml
    session=$OUT/$m.sqlite
    start=$(date +%s)
    if [[ $m == sql ]]; then
        # hand-written mutants of SQL text (cosmic-ray never mutates string literals): always all of them
        python bench/mutation_sql.py "$cfg" "$OUT/sql.json" | tee "$OUT/sql.txt" || true
        echo "sql: $(($(date +%s) - start)) s ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))" \
            | tee -a "$OUT/sql.time"
        continue
    fi
    if [[ $recheck == 1 ]]; then
        [[ -f $session ]] || { echo "error: no session $session to recheck; run bench/mutation.sh $m first" >&2; exit 1; }
        # forget the survivors' results so that exec runs them again, against the tests as they are now
        python - "$session" <<'EOF'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
n = con.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
con.commit()
print(f"{sys.argv[1]}: re-running {n} survivors")
EOF
    else
        echo "== $m: baseline (the tests must pass unmutated)"
        cosmic-ray baseline "$cfg"
        rm -f "$session"
        cosmic-ray init "$cfg" "$session"
        python bench/mutation_scope.py "$session" --config "$cfg"
    fi
    echo "== $m: exec ($(date -u +%H:%M:%S) UTC)"
    cosmic-ray exec "$cfg" "$session"
    end=$(date +%s)
    echo "$m: $((end - start)) s ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/$m.time"
    cr-report --show-diff --surviving-only "$session" > "$OUT/$m.txt" || true
    tail -n 4 "$OUT/$m.txt"
done
}

main "$@"
exit $?
