"""Print the provenance table of data/README.md from the shipped files and their collection logs, and draw each
collection's training returns with the two dataset windows marked.

    python data/describe.py                                   # the files in data/
    python data/describe.py DIR                               # walker_{task}_{quality}.npz (and logs) in DIR
    python data/describe.py --figure data/training_returns.png
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from walker_data import SEED_RETURNS, TASKS, DatasetError, atomic_write_bytes, file_sha256, load_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
QUALITIES = ("medium", "medium-replay")


def episode_returns(data: dict[str, np.ndarray]) -> np.ndarray:
    ends = np.flatnonzero(data["timeouts"]) + 1
    return np.array([chunk.sum() for chunk in np.split(data["rewards"], ends)[:-1]])


def collection_log(folder: str, task: str) -> dict | None:
    path = os.path.join(folder, f"walker_{task}_collection.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable collection log ({exc})") from None


def training_returns(folder: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(env step at each episode's end, its return) from walker_{task}_training_returns.csv."""
    path = os.path.join(folder, f"walker_{task}_training_returns.csv")
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
        return np.array([float(r["env_step"]) for r in rows]), np.array([float(r["return"]) for r in rows])
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable training log ({exc})") from None


def print_table(folder: str) -> None:
    print("| file | transitions | episodes | mean return | min | max | seed data's mean | size (MB) | sha256 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in TASKS:
        for quality in QUALITIES:
            path = os.path.join(folder, f"walker_{task}_{quality}.npz")
            data = load_dataset(path, task)
            returns = episode_returns(data)
            digest = file_sha256(path)
            print(f"| `{os.path.basename(path)}` | {len(data['rewards'])} | {len(returns)} | {returns.mean():.1f} | "
                  f"{returns.min():.1f} | {returns.max():.1f} | {SEED_RETURNS[task][quality]} | "
                  f"{os.path.getsize(path) / 1e6:.1f} | `{digest[:16]}…` |")
    print()
    for task in TASKS:
        log = collection_log(folder, task)
        if log is None or "windows" not in log:  # a collection by the earlier collector has no windows
            continue
        windows = "; ".join(f"{quality}: episodes {w['first_episode']}–{w['last_episode']} (env steps "
                            f"{w['env_steps'][0]}–{w['env_steps'][1]}), mean {w['mean_return']:.1f}"
                            for quality, w in log["windows"].items())
        cpus = sorted({s["cpu"]["model"] for s in log["sittings"]})
        print(f"- {task}: `{log['command']}`: {log['env_steps']} env steps ({log['episodes']} training episodes), "
              f"{log['wall_seconds'] / 3600:.1f} h wall time in {len(log['sittings'])} sitting(s) on {', '.join(cpus)}, "
              f"{log['precision']}; {windows}; versions {log['versions']}")


def draw_figure(folder: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(6 * len(TASKS), 3.8))
    for ax, task in zip(axes, TASKS):
        if not os.path.isfile(os.path.join(folder, f"walker_{task}_training_returns.csv")):
            ax.set_title(f"walker-{task}: no training log in {folder}")
            continue
        steps, returns = training_returns(folder, task)
        ax.plot(steps / 1e3, returns, lw=0.6, color="0.6", label="training episode")
        log = collection_log(folder, task)
        size = (log or {}).get("args", {}).get("window_episodes", 51)  # an earlier collector's log has none
        if len(returns) >= size:
            trailing = np.convolve(returns, np.ones(size) / size, mode="valid")
            ax.plot(steps[size - 1:] / 1e3, trailing, color="k", lw=1.2, label=f"mean of the last {size}")
        for quality, color in zip(QUALITIES, ("tab:red", "tab:blue")):
            ax.axhline(SEED_RETURNS[task][quality], color=color, ls=":", lw=1)
            if log and quality in log.get("windows", {}):
                low, high = log["windows"][quality]["env_steps"]
                ax.axvspan(low / 1e3, high / 1e3, color=color, alpha=0.25,
                           label=f"{quality} window (seed data's mean dotted)")
        ax.set(title=f"walker-{task}: one TD3 run", xlabel="env steps (thousands)", ylabel="episode return")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110)
    atomic_write_bytes(out, image.getvalue())
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=HERE)
    parser.add_argument("--figure", help="write the training-return figure here instead of printing the table")
    args = parser.parse_args()
    if args.figure:
        draw_figure(args.folder, args.figure)
    else:
        print_table(args.folder)


if __name__ == "__main__":
    try:
        main()
    except DatasetError as exc:  # one line naming the file and the fault, the same checks as the scripts'
        sys.exit(f"error: {exc}")
