#!/usr/bin/env python3
"""Draws the scaling curves of `bench/run scale` (its scale.csv) into one PNG.

Usage: bench/plot.py RESULTS/scale.csv OUT.png   (needs matplotlib: pip install matplotlib)

One panel a kind (context files, layers, layer size), log-log, seconds against size for each
operation, with the linear trend through the smallest point dashed: a curve at or under its
dashed line scales linearly or better. A fourth panel shows the peak RSS of every point.
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNITS = {"files": "files in the context", "layers": "layers (RUN steps)", "bytes": "MiB in one layer"}


def main(src, out):
    rows = [r for r in csv.DictReader(open(src)) if r["seconds"] not in ("", "fail")]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for ax, kind in zip(axes, ["files", "layers", "bytes"]):
        for op in sorted({r["op"] for r in rows if r["kind"] == kind}):
            pts = sorted((float(r["size"]), float(r["seconds"])) for r in rows if r["kind"] == kind and r["op"] == op)
            if not pts:
                continue
            xs, ys = zip(*pts)
            line = ax.plot(xs, ys, marker="o", label=op)[0]
            x0, y0 = pts[0]
            ax.plot(xs, [y0 * x / x0 for x in xs], linestyle="--", color=line.get_color(), alpha=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(UNITS[kind])
        ax.set_ylabel("seconds")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    ax = axes[3]
    for kind in ["files", "layers", "bytes"]:
        for op in sorted({r["op"] for r in rows if r["kind"] == kind}):
            pts = sorted((float(r["size"]), float(r["rss_mib"])) for r in rows if r["kind"] == kind and r["op"] == op)
            ax.plot(range(len(pts)), [p[1] for p in pts], marker="o", label=f"{kind} {op}")
    ax.axhline(100, color="red", linestyle=":", label="100 MB goal")
    ax.set_xlabel("size step (smallest to largest)")
    ax.set_ylabel("peak RSS, MiB")
    ax.legend(fontsize=7)
    fig.suptitle(f"rbuild scaling curves ({src})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
