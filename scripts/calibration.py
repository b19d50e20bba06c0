"""The cpu scale's calibration: learning curves of single runs, return against gradient steps and CPU minutes.

Reads results/cpu/calibration/*.json (results.json files of runs named {algorithm}_{task}_{dataset}_{size}_
init-{init}_s{seed}; their commands are in results/cpu/calibration/README.md) and writes curves.png and
curves.md beside them.

    python scripts/calibration.py
"""

from __future__ import annotations

import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "results", "cpu", "calibration")


def main() -> None:
    runs = []
    for path in sorted(glob.glob(os.path.join(FOLDER, "*.json"))):
        with open(path) as f:
            runs.append((os.path.basename(path)[:-5], json.load(f)))
    if not runs:
        raise SystemExit(f"error: {FOLDER}: no calibration runs")
    fig, (by_steps, by_minutes) = plt.subplots(1, 2, figsize=(12, 4.5))
    lines = ["| run | return at gradient steps | final | training minutes |", "|---|---|---|---|"]
    for name, results in runs:
        for task, entry in results["tasks"].items():
            history = entry["history"]
            steps = [e["step"] for e in history]
            minutes = [e["train_seconds"] / 60 for e in history]
            returns = [e["mean"] for e in history]
            style = "-" if "init-torch" in name else "--" if "init-authors" in name else ":"
            by_steps.plot(steps, returns, style, label=f"{name} {task}")
            by_minutes.plot(minutes, returns, style, label=f"{name} {task}")
            curve = ", ".join(f"{s / 1000:.1f}k: {r:.0f}" for s, r in zip(steps, returns))
            lines.append(f"| {name} ({task}) | {curve} | {returns[-1]:.1f} | {minutes[-1]:.1f} |")
    for ax, label in ((by_steps, "gradient steps"), (by_minutes, "training minutes (one thread, two runs side by side)")):
        ax.set_xlabel(label)
        ax.set_ylabel("evaluation return (10 episodes)")
        ax.axhline(300, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    by_steps.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(FOLDER, "curves.png"), dpi=110)
    with open(os.path.join(FOLDER, "curves.md"), "w") as f:
        f.write("\n".join(["# Calibration curves (made by `python scripts/calibration.py`)", "", *lines, ""]))
    print(f"wrote {FOLDER}/curves.png and curves.md from {len(runs)} runs")


if __name__ == "__main__":
    main()
