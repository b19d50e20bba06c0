"""Learning curves of single runs, return against gradient steps and CPU minutes: the cpu scale's calibration,
and longer runs than the grid's budget.

Reads FOLDER/*.json (results.json files of runs named {algorithm}_{task}_{dataset}_{size}_..._s{seed}; their
commands are in FOLDER/README.md) and writes curves.png and curves.md beside them.

    python scripts/calibration.py                           # results/cpu/calibration
    python scripts/calibration.py --folder results/cpu/longer
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import tyro

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))
from walker_data import atomic_write_bytes  # noqa: E402  (shared with the data tools)


@dataclass
class Args:
    folder: str = os.path.join(ROOT, "results", "cpu", "calibration")
    """where the runs' json files are; curves.png and curves.md are written there"""


def main(folder: str) -> None:
    runs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            runs.append((os.path.basename(path)[:-5], json.load(f)))
    if not runs:
        raise SystemExit(f"error: {folder}: no runs (*.json)")
    fig, (by_steps, by_minutes) = plt.subplots(1, 2, figsize=(12, 4.5))
    lines = ["| run | return at gradient steps | final | training minutes |", "|---|---|---|---|"]
    by_variant = defaultdict(list)  # (algorithm/task/dataset/size, init) -> one history per seed
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
            by_variant[re.sub(r"_s\d+$", "", name) + f" ({task})"].append(history)
    lines += ["", "Per variant, over its seeds: the final return, the mean of the last three evaluations and of every "
              "evaluation from 10k steps on (less noisy than one final evaluation) and the first step (training "
              "minutes) whose evaluation reached 300.", "",
              "| variant | seeds | final (mean) | last three evaluations | mean return from 10k steps | first step >= 300 |",
              "|---|---|---|---|---|---|"]
    for variant, histories in sorted(by_variant.items()):
        finals = [h[-1]["mean"] for h in histories]
        last_three = [np.mean([e["mean"] for e in h[-3:]]) for h in histories]
        late = [[e["mean"] for e in h if e["step"] >= 10_000] for h in histories]
        late_text = (f"{np.mean([np.mean(x) for x in late]):.0f} ({', '.join(f'{np.mean(x):.0f}' for x in late)})"
                     if all(late) else "–")  # a run that stopped before 10k steps has no such mean
        first = [next((f"{e['step'] / 1000:.1f}k ({e['train_seconds'] / 60:.1f} min)" for e in h if e["mean"] >= 300),
                      "never") for h in histories]
        lines.append(f"| {variant} | {len(histories)} | {np.mean(finals):.0f} ({', '.join(f'{x:.0f}' for x in finals)}) "
                     f"| {np.mean(last_three):.0f} ({', '.join(f'{x:.0f}' for x in last_three)}) "
                     f"| {late_text} | {', '.join(first)} |")
    for ax, label in ((by_steps, "gradient steps"), (by_minutes, "training minutes (one thread, two runs side by side)")):
        ax.set_xlabel(label)
        ax.set_ylabel("evaluation return (10 episodes)")
        ax.axhline(300, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    by_steps.legend(fontsize=7)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    atomic_write_bytes(os.path.join(folder, "curves.png"), image.getvalue())
    command = "python scripts/calibration.py" + ("" if folder == Args.folder else f" --folder {os.path.relpath(folder, ROOT)}")
    atomic_write_bytes(os.path.join(folder, "curves.md"),
                 "\n".join([f"# Learning curves (made by `{command}`)", "", *lines, ""]).encode())
    print(f"wrote {folder}/curves.png and curves.md from {len(runs)} runs")


if __name__ == "__main__":
    main(tyro.cli(Args).folder)
