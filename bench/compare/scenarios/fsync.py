"""The fsync probe: 4 KiB pwrite + fdatasync in a loop, run several times during a run (the disk may be shared); the
ceiling on strictly sequential durable commits is 1 / the median of the probes' p50."""

from __future__ import annotations

import os
import statistics
import subprocess
import time

from harness.config import log
from harness.stats import med, ms, pct


def sync_latencies(path, seconds: float) -> list[float]:
    """Seconds per fdatasync of a 4 KiB pwrite, overwriting a preallocated 1 MiB file (also bench/floor.py's probe)."""
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
    return lat


def probe(bench, when: str):
    """4 KiB pwrite + fdatasync loop. Probed several times during the run (the disk may be shared); the
    ceiling uses the median of the probes' p50."""
    lat = sync_latencies(bench.work / "fsync-probe.bin", bench.cfg["fsync_seconds"])
    probe = {
        "when": when,
        "n": len(lat),
        "p50_ms": ms(pct(lat, 50)),
        "p99_ms": ms(pct(lat, 99)),
        "mean_ms": ms(statistics.mean(lat)),
        "loadavg": os.getloadavg()[0],
    }
    probes = bench.results.setdefault("fsync_probes", [])
    probes.append(probe)
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(bench.work)], capture_output=True, text=True).stdout.strip()
    p50 = med([p["p50_ms"] for p in probes])
    bench.results["fsync"] = {
        "dir": str(bench.work),
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


def render(res: dict) -> list[str]:
    if "fsync" not in res:
        return []
    f = res["fsync"]
    return [
        f"\nfsync probe ({f['fs_type']}, 4 KiB pwrite+fdatasync, {f['probes']} probes, {f['n']} syncs): "
        f"median p50 {f['p50_ms']:.3f} ms (probes {f['p50_range_ms'][0]:.3f}..{f['p50_range_ms'][1]:.3f}), "
        f"p99 {f['p99_ms']:.3f} ms -> ceiling {f['ceiling_per_s']:.0f} commits/s"
    ]
