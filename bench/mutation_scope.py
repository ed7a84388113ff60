"""A cosmic-ray filter for bench/mutation.sh: skip the mutants outside the code under study.

    python bench/mutation_scope.py SESSION.sqlite --config bench/mutation/spool.toml

Two rules, both read from the config's `[cosmic-ray.filters.scope]` table:

- `functions` (optional): qualified names (`Dispatcher._record`, `close_run`); a mutant is kept only if it lies
  inside one of them (nested functions included). Names, not line numbers, so the scope survives edits above it.
- the operator set below: a mutant is kept only if its operator is one of `KEEP`. Cosmic-ray's full set swaps every
  binary and comparison operator for every other one (`+` becomes `>>`, `==` becomes `is`), which multiplies the run
  time and mostly yields mutants any test kills; the kept ones are the boundary, negation, constant, exception,
  loop and boolean-logic mutations that tests of fencing and recording code must be able to see.

Skipped mutants are marked SKIPPED in the session (cosmic-ray's own filters do the same), so `cr-report` still
lists them as such.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

from cosmic_ray.config import load_config
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult

KEEP = re.compile(
    r"core/("
    r"ReplaceComparisonOperator_(Eq_NotEq|NotEq_Eq|Lt_LtE|Lt_GtE|LtE_Lt|LtE_Gt|Gt_GtE|Gt_LtE|GtE_Gt|GtE_Lt"
    r"|Is_IsNot|IsNot_Is)"
    r"|ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul)"
    r"|ReplaceUnaryOperator_(Delete_Not|USub_UAdd)"
    r"|AddNot|ExceptionReplacer|NumberReplacer|ReplaceAndWithOr|ReplaceOrWithAnd|ReplaceTrueWithFalse"
    r"|ReplaceFalseWithTrue|ReplaceBreakWithContinue|ReplaceContinueWithBreak|ZeroIterationForLoop|RemoveDecorator"
    r")$"
)


def definitions(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, last line) of every function and class in the module, decorators included."""
    out: list[tuple[str, int, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                out.append((name, first, child.end_lineno or child.lineno))
                walk(child, f"{name}.")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return out


def in_scope(defs: list[tuple[str, int, int]], wanted: set[str], line: int) -> bool:
    return any(name in wanted and first <= line <= last for name, first, last in defs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    scope = config.sub("filters", "scope")
    wanted = set(scope.get("functions", []))
    module_paths = config["module-path"]
    module_paths = [module_paths] if isinstance(module_paths, str) else list(module_paths)
    cache = {Path(p): definitions(Path(p)) for p in module_paths}
    if wanted:
        missing = sorted(wanted - {name for defs in cache.values() for name, _, _ in defs})
        if missing:
            print(f"error: {args.config}: no such function(s) in {', '.join(module_paths)}: {', '.join(missing)}; "
                  "update the scope", file=sys.stderr)
            return 1
    kept = skipped = 0
    with use_db(args.session, WorkDB.Mode.open) as db:
        skip: list[str] = []
        for item in db.pending_work_items:
            ok = True
            for m in item.mutations:
                if not KEEP.match(m.operator_name):
                    ok = False
                elif wanted:
                    defs = cache.get(m.module_path) or definitions(m.module_path)
                    ok = ok and in_scope(defs, wanted, m.start_pos[0])
            if ok:
                kept += 1
            else:
                skip.append(item.job_id)
        skipped = len(skip)
        if skip:
            db.set_multiple_results(skip, WorkResult(output="outside the scope (bench/mutation_scope.py)",
                                                     worker_outcome=WorkerOutcome.SKIPPED))
    print(f"{args.session}: {kept} mutants to run, {skipped} outside the scope")
    return 0


if __name__ == "__main__":
    sys.exit(main())
