"""Convert a course/UTDS walker dataset directory into this project's .npz format.

The source holds episode files `episode_XXXXXX_1000.npz` with keys observation (1001x24), action (1001x6),
reward (1001x1), discount (1001x1) and physics (1001x18 = qpos 9 + qvel 9). Index 0 is the reset step with
a dummy action and reward, so transition t is (observation[t-1], action[t], reward[t], observation[t]).
Both tasks' rewards are recomputed from `physics[t]` with dm_control; the recomputed own-task reward must
match the stored one, which checks the reading of the format.

    python data/convert_utds.py --src path/to/walker_walk-td3-medium/data
"""

from __future__ import annotations

import glob
import os
import re
import sys
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from walker_data import (ACT_DIM, KEYS, OBS_DIM, TASKS, DatasetError, Range, WalkerEnv, check_ranges,  # noqa: E402
                         save_dataset, task_rewards, validate_dataset)

EPISODE_KEYS = {"observation": OBS_DIM, "action": ACT_DIM, "reward": 1, "physics": 18}


@dataclass
class Args:
    src: str
    """directory of episode_*.npz files, e.g. .../walker_walk-td3-medium/data"""
    task: str | None = None
    """walk or run (default: read from the path, walker_<task>-td3-<quality>)"""
    quality: str | None = None
    """medium or medium-replay (default: read from the path)"""
    out: str | None = None
    """output file (default: data/walker_<task>_<quality>.npz)"""
    reward_tolerance: Annotated[float, Range("[0, inf)")] = 1e-4
    """largest allowed gap between a stored reward and the one recomputed from physics, in [0, inf)"""


def infer_from_path(src: str) -> tuple[str | None, str | None]:
    match = re.search(r"walker_(walk|run)-td3-(medium-replay|medium)", os.path.abspath(src))
    return (match.group(1), match.group(2)) if match else (None, None)


def read_episode(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            episode = {key: npz[key] for key in EPISODE_KEYS if key in npz.files}
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    missing = [key for key in EPISODE_KEYS if key not in episode]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}")
    length = len(episode["observation"])
    for key, width in EPISODE_KEYS.items():
        episode[key] = episode[key].reshape(len(episode[key]), -1)
        if episode[key].shape != (length, width):
            raise DatasetError(f"{path}: '{key}' has shape {episode[key].shape}, expected ({length}, {width})")
        if not np.isfinite(episode[key]).all():
            raise DatasetError(f"{path}: '{key}' contains NaN or inf")
    return episode


def convert(src: str, task: str, reward_tolerance: float = 1e-4) -> dict[str, np.ndarray]:
    files = sorted(glob.glob(os.path.join(src, "episode_*.npz")))
    if not files:
        raise DatasetError(f"{src}: no episode_*.npz files")
    physics = WalkerEnv(task).physics
    columns = {key: [] for key in ("observations", "actions", "next_observations", "timeouts",
                                   *(f"rewards_{t}" for t in TASKS))}
    for path in files:
        episode = read_episode(path)
        steps = len(episode["observation"]) - 1
        rewards = {t: np.zeros(steps, np.float32) for t in TASKS}
        for t in range(1, steps + 1):
            physics.set_state(episode["physics"][t])
            physics.forward()  # positions, orientations and sensors of that state
            for name, value in task_rewards(physics).items():
                rewards[name][t - 1] = value
        gap = np.abs(rewards[task] - episode["reward"][1:, 0]).max()
        if gap > reward_tolerance:
            raise DatasetError(f"{path}: stored '{task}' rewards differ from those recomputed from physics "
                               f"by up to {gap:.3g}; is this a walker_{task} dataset?")
        columns["observations"].append(episode["observation"][:-1])
        columns["actions"].append(episode["action"][1:])
        columns["next_observations"].append(episode["observation"][1:])
        columns["timeouts"].append(np.arange(1, steps + 1) == steps)
        for name in TASKS:
            columns[f"rewards_{name}"].append(rewards[name])
    data = {key: np.concatenate(value) for key, value in columns.items()}
    data["rewards"] = data[f"rewards_{task}"]
    data["terminals"] = np.zeros(len(data["rewards"]), bool)
    return data


def main(args: Args) -> None:
    check_ranges(args)
    inferred_task, inferred_quality = infer_from_path(args.src)
    task, quality = args.task or inferred_task, args.quality or inferred_quality
    if task not in TASKS:
        sys.exit(f"error: {args.src}: cannot tell the task (walk or run); pass --task")
    out = args.out or (quality and os.path.join("data", f"walker_{task}_{quality}.npz"))
    if not out:
        sys.exit(f"error: {args.src}: cannot tell the dataset quality; pass --quality or --out")
    try:
        data = convert(args.src, task, args.reward_tolerance)
        # The checks the algorithm scripts apply when they read the file: dtypes, ranges, one timeout per episode.
        validate_dataset({key: np.asarray(data[key], dtype) for key, (dtype, _) in KEYS.items()}, args.src, task)
    except DatasetError as exc:
        sys.exit(f"error: {exc}")
    save_dataset(out, data)
    print(f"wrote {out}: {len(data['rewards'])} transitions, {int(data['timeouts'].sum())} episodes")


if __name__ == "__main__":
    main(tyro.cli(Args))
