"""Bar chart of a compare_llamacpp.py result: one bar per figure, the ratio ours vs llama.cpp (> 1: ours
better), with the two raw values written beside it.

    python bench/plot_compare.py bench/results/compare_9b_cpu.json bench/results/compare_9b_cpu.png

Needs matplotlib (pip install ".[bench]").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(Path(sys.argv[1]).read_text())
    figs = res["figures"]
    names = list(figs)
    ratios = [figs[n]["ratio"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.6))
    colors = ["#2a9d4b" if r >= 1.0 else "#c0392b" for r in ratios]
    ax.barh(names[::-1], ratios[::-1], color=colors[::-1])
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, n in enumerate(names[::-1]):
        f = figs[n]
        ax.text(f["ratio"] + 0.02, i, f"{f['ratio']:.2f}x  (ours {f['ours']:g} vs {f['llamacpp']:g} {f['unit']})",
                va="center", fontsize=8)
    ax.set_xlim(0, max(ratios) * 1.6)
    ax.set_xlabel("ours vs llama.cpp (> 1: ours better; speeds ours/theirs, times and memory theirs/ours)")
    m = res.get("machine", {})
    ax.set_title(f"{Path(res['model']).name}, {res['threads']} threads; {m.get('cpu', '?')}, {m.get('cores', '?')} cores",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
