"""`core.models.iso` renders epoch seconds as ISO 8601 UTC with milliseconds and a Z, exactly as
`datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")` does (every event, run and `--json` time goes
through it); it does so without importing datetime, which the hot worker commands do not need (issue 11)."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime

from hermes_cli.kanban.core.models import iso


def reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_iso_matches_datetime_on_boundaries_and_random_times() -> None:
    rng = random.Random(11)
    samples = [0.0, 1.0, 0.0005, 0.9995, 0.9999995, 1.9999996, 59.9999999, 1795867974.4992576, 1795867974.9995,
               1795867974.999999, 1795867974.9999995, 4102444799.9999, 951782400.0, 1709164800.123456,
               -0.0005, -1.5, -86400.25]
    samples += [rng.uniform(0, 4.1e9) for _ in range(20000)]
    near_ms = (0.0, 0.0004999, 0.0005, 0.0009999)
    samples += [round(rng.uniform(1.7e9, 1.9e9), 3) + rng.choice(near_ms) for _ in range(20000)]
    for ts in samples:
        assert iso(ts) == reference(ts), ts
    assert iso(None) is None


def test_a_models_import_does_not_import_datetime() -> None:
    code = "import sys\nfrom hermes_cli.kanban.core import models\nmodels.iso(1.5)\nprint('datetime' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"
