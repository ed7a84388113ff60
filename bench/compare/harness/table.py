"""Fixed-width text tables for the report."""

from __future__ import annotations


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def table(headers, rows):
    """Fixed-width table; cells are single-line, rows shorter than the header are padded, the last column is free
    (it carries the long n/a reasons)."""
    cells = [[str(c).replace("\n", " ") for c in r] + [""] * (len(headers) - len(r)) for r in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    widths[-1] = len(str(headers[-1]))
    lines = [
        "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)
