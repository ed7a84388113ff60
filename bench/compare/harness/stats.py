"""Percentiles, medians and seconds -> milliseconds, all tolerant of missing values (None)."""

from __future__ import annotations

import statistics


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ms(x):
    return None if x is None else x * 1000.0
