"""One virtualenv per compared system under bench/.venvs/<name>, created on first use and reused afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.config import ROOT, SYSTEMS, log


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
