"""Shared pieces of the data tools: the walker environment, both tasks' rewards, and dataset I/O.

Used by `collect_td3.py`, `convert_utds.py` and the tests. The algorithm scripts at the repository
root deliberately do not import this module: each of them reads alone (CleanRL style).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from typing import get_type_hints

os.environ.setdefault("MUJOCO_GL", "disable")  # no display needed; silences dm_control's GLFW warning

import gymnasium as gym
import numpy as np
from dm_control import suite
from dm_control.suite import walker

TASKS = ("walk", "run")
OBS_DIM, ACT_DIM, EPISODE_LEN = 24, 6, 1000
# Mean episode return of the report's data (the course's UTDS TD3 files, 51 episodes each): what ours aims at.
SEED_RETURNS = {"walk": {"medium": 962.8, "medium-replay": 929.8}, "run": {"medium": 318.4, "medium-replay": 251.5}}
KEYS = {  # D4RL names, dtypes and trailing shapes
    "observations": (np.float32, (OBS_DIM,)),
    "actions": (np.float32, (ACT_DIM,)),
    "next_observations": (np.float32, (OBS_DIM,)),
    "rewards": (np.float32, ()),
    "terminals": (np.bool_, ()),
    "timeouts": (np.bool_, ()),
    "rewards_walk": (np.float32, ()),
    "rewards_run": (np.float32, ()),
}
# Actions in the policy's tanh range (where the CQL penalty samples), rewards in dm_control's [0, 1].
VALUE_RANGES = {"actions": (-1.0, 1.0), "rewards": (0.0, 1.0), "rewards_walk": (0.0, 1.0), "rewards_run": (0.0, 1.0)}
_REWARD_TASKS = {  # reward functions only: the same physics scored against each task's target speed
    "walk": walker.PlanarWalker(move_speed=walker._WALK_SPEED),
    "run": walker.PlanarWalker(move_speed=walker._RUN_SPEED),
}


@dataclass(frozen=True)
class Range:
    """The meaningful values of a numeric flag in interval notation, e.g. "(0, 1]"; checked before any work."""
    interval: str

    def __contains__(self, value: float) -> bool:
        low, high = (float(bound) for bound in self.interval[1:-1].split(","))
        above = value >= low if self.interval[0] == "[" else value > low
        below = value <= high if self.interval[-1] == "]" else value < high
        return above and below  # False for NaN


def check_ranges(args) -> None:
    """Exit with one line if a flag annotated with a Range (and given a value; each value of a list flag) lies
    outside it."""
    for name, hint in get_type_hints(type(args), include_extras=True).items():
        values = getattr(args, name)
        for allowed in getattr(hint, "__metadata__", ()):
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(allowed, Range) and value is not None and value not in allowed:
                    sys.exit(f"error: --{name.replace('_', '-')} {value} is outside its range {allowed.interval}")


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file and the fault."""


def flatten_observation(obs) -> np.ndarray:
    """dm_control's order (orientations 14, height 1, velocity 9), not gymnasium's sorted Dict keys."""
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in obs.values()])


def task_rewards(physics) -> dict[str, float]:
    """Reward of every task for the current physics state (what the env returns after a step)."""
    return {task: float(reward_fn.get_reward(physics)) for task, reward_fn in _REWARD_TASKS.items()}


class WalkerEnv(gym.Env):
    """dm_control walker-{walk,run} as a gymnasium Env; `info` carries both tasks' rewards."""

    metadata = {"render_modes": []}

    def __init__(self, task: str, seed: int | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        self.task = task
        self._env = suite.load("walker", task, task_kwargs={"random": seed})
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
        self.action_space.seed(seed)

    @property
    def physics(self):
        return self._env.physics

    @property
    def task_random(self) -> np.random.RandomState:
        """The stream that draws each episode's initial pose (a checkpoint saves and restores it)."""
        return self._env.task.random

    def observation(self) -> np.ndarray:
        """The observation of the current physics state (after setting it by hand)."""
        return flatten_observation(self._env.task.get_observation(self.physics))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        time_step = self._env.reset()
        return flatten_observation(time_step.observation), {}

    def step(self, action):
        time_step = self._env.step(np.clip(action, -1.0, 1.0))
        info = {f"rewards_{task}": r for task, r in task_rewards(self.physics).items()}
        # Walker never terminates; the episode ends by the 1000-step time limit only.
        return flatten_observation(time_step.observation), float(time_step.reward), False, time_step.last(), info


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes (hex), computed once per version of the file in this process."""
    stat = os.stat(path)
    return _sha256(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Temporary file in the same folder, flushed and fsynced, then renamed: a kill or a full disk mid-write
    leaves the previous file intact."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_dataset(path: str, data: dict[str, np.ndarray]) -> None:
    """Write a dataset (atomically) after casting to the D4RL dtypes; compressed, as the files are committed."""
    arrays = {key: np.asarray(data[key], dtype=dtype) for key, (dtype, _) in KEYS.items()}
    content = io.BytesIO()
    np.savez_compressed(content, **arrays)
    atomic_write_bytes(path, content.getvalue())


def load_dataset(path: str, task: str | None = None) -> dict[str, np.ndarray]:
    """Load and validate a dataset; any fault raises DatasetError naming the file."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such dataset file")
    try:
        with np.load(path) as npz:
            data = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError, pickle refusals...
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    validate_dataset(data, path, task)
    return data


def validate_dataset(data: dict[str, np.ndarray], path: str, task: str | None = None) -> None:
    missing = [key for key in KEYS if key not in data]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}")
    n = len(data["observations"])
    for key, (dtype, shape) in KEYS.items():
        arr = data[key]
        if arr.shape != (n, *shape):
            raise DatasetError(f"{path}: '{key}' has shape {arr.shape}, expected {(n, *shape)}")
        if arr.dtype != dtype:
            raise DatasetError(f"{path}: '{key}' has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if arr.dtype != np.bool_ and not np.isfinite(arr).all():
            raise DatasetError(f"{path}: '{key}' contains NaN or inf")
    if n == 0:
        raise DatasetError(f"{path}: the dataset is empty")
    for key, (low, high) in VALUE_RANGES.items():
        outside = ((data[key] < low - 1e-6) | (data[key] > high + 1e-6)).reshape(n, -1).any(1)
        if outside.any():
            row = int(outside.argmax())
            raise DatasetError(f"{path}: '{key}' outside [{low:g}, {high:g}] at row {row}: {data[key][row]}")
    wrong = data["timeouts"] != ((np.arange(n) + 1) % EPISODE_LEN == 0)
    if wrong.any() or n % EPISODE_LEN:
        row = int(wrong.argmax()) if wrong.any() else n - 1
        raise DatasetError(f"{path}: 'timeouts' must mark the last step of each {EPISODE_LEN}-step episode and "
                           f"nothing else; row {row} is {bool(data['timeouts'][row])}")
    if task is not None:
        if task not in TASKS:
            raise DatasetError(f"{path}: unknown task {task!r}; expected one of {TASKS}")
        if not np.array_equal(data["rewards"], data[f"rewards_{task}"]):
            raise DatasetError(f"{path}: 'rewards' differs from 'rewards_{task}'")
