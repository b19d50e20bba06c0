"""Print the provenance table of data/README.md from the shipped files and their collection logs.

    python data/describe.py            # the files in data/
    python data/describe.py DIR        # walker_{task}_{quality}.npz (and collection logs, if any) in DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from walker_data import TASKS, DatasetError, load_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def episode_returns(data: dict[str, np.ndarray]) -> np.ndarray:
    ends = np.flatnonzero(data["timeouts"]) + 1
    return np.array([chunk.sum() for chunk in np.split(data["rewards"], ends)[:-1]])


def main(folder: str = HERE) -> None:
    print("| file | transitions | episodes | mean return | min | max | size (MB) | sha256 |")
    print("|---|---|---|---|---|---|---|---|")
    for task in TASKS:
        for quality in ("medium", "medium-replay"):
            path = os.path.join(folder, f"walker_{task}_{quality}.npz")
            data = load_dataset(path, task)
            returns = episode_returns(data)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            print(f"| `{os.path.basename(path)}` | {len(data['rewards'])} | {len(returns)} | {returns.mean():.1f} | "
                  f"{returns.min():.1f} | {returns.max():.1f} | {os.path.getsize(path) / 1e6:.1f} | `{digest[:16]}…` |")
    print()
    for task in TASKS:
        if not os.path.isfile(os.path.join(folder, f"walker_{task}_collection.json")):
            continue
        with open(os.path.join(folder, f"walker_{task}_collection.json")) as f:
            log = json.load(f)
        print(f"- {task}: `{log['command']}`: {log['env_steps']} env steps until the snapshot's evaluation return "
              f"{log['snapshot_eval_return']:.1f} (target {log['medium_target'][0]:.0f}–{log['medium_target'][1]:.0f}); "
              f"medium rollouts' mean return {log['medium_rollout_mean_return']:.1f}; "
              f"{log['total_seconds'] / 60:.1f} min wall time; versions {log['versions']}")


if __name__ == "__main__":
    try:
        main(*sys.argv[1:2])
    except DatasetError as exc:  # one line naming the file and the fault, the same checks as the scripts'
        sys.exit(f"error: {exc}")
