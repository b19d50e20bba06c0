"""Shared fixtures: tiny datasets made from real walker rollouts, and a runner for the scripts."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "data"), os.path.join(ROOT, "scripts")]
os.environ.setdefault("MUJOCO_GL", "disable")

import preloaded  # noqa: E402
from walker_data import KEYS, TASKS, WalkerEnv, save_dataset  # noqa: E402

# The task flag each script takes: the single-task ones learn one task, the multi-task ones both.
TASK_FLAGS = {"bc.py": ["--task", "walk"], "csac.py": ["--task", "run"], "mtcsac.py": [], "hcsac.py": []}

# Small enough for CI, big enough to exercise every code path (batches, relabeling, evaluation).
TINY_FLAGS = ["--epochs", "2", "--hidden-dim", "32", "--num-layers", "2", "--batch-size", "256",
              "--eval-every", "1", "--eval-episodes", "2"]


def random_rollouts(task: str, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Full episodes of uniformly random actions, in the dataset format (both tasks' rewards included)."""
    env = WalkerEnv(task, seed=seed)
    rng = np.random.default_rng(seed)
    rows = {key: [] for key in ("observations", "actions", "next_observations", "timeouts", "rewards_walk", "rewards_run")}
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            action = rng.uniform(-1, 1, 6).astype(np.float32)
            next_obs, _, _, done, info = env.step(action)
            for key, value in (("observations", obs), ("actions", action), ("next_observations", next_obs),
                               ("timeouts", done), ("rewards_walk", info["rewards_walk"]),
                               ("rewards_run", info["rewards_run"])):
                rows[key].append(value)
            obs = next_obs
    rows["rewards"] = rows[f"rewards_{task}"]
    rows["terminals"] = [False] * len(rows["rewards"])
    return {key: np.array(rows[key], dtype) for key, (dtype, _) in KEYS.items()}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    """walker_{walk,run}_{medium,medium-replay}.npz with one random episode (1000 rows) each."""
    directory = str(tmp_path_factory.mktemp("data"))
    save_tiny_datasets(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_grid(tiny_data_dir, tmp_path_factory):
    """The whole tiny grid (4 algorithms x 2 datasets, seed 0: 12 runs), run once with the local launcher and
    shared by the tests that read it (each process start costs seconds: torch, torch._dynamo, dm_control).
    A test that changes its files works on a copy (copy_grid)."""
    workdir = tmp_path_factory.mktemp("tiny_grid")
    result = run_script("scripts/reproduce.py", "--scale", "tiny", "--seeds", "0", "--workers", "2", "--data-dir",
                        tiny_data_dir, "--workdir", str(workdir), "--results-dir", str(workdir / "results"),
                        cwd=workdir, fresh=True)
    # a fresh interpreter prints nothing on stderr (the forked runs of the other tests cannot show that)
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    return workdir, result.stdout


def copy_grid(grid_dir, destination) -> None:
    """grid_dir's run folders and committed results, copied into destination (a test's own tmp_path)."""
    for folder in ("runs", "results"):
        shutil.copytree(os.path.join(grid_dir, folder), os.path.join(destination, folder), dirs_exist_ok=True)


def save_tiny_datasets(directory: str) -> None:
    """One random episode per task and dataset, walker_{task}_{dataset}.npz in directory."""
    for seed, (task, quality) in enumerate((t, q) for t in TASKS for q in ("medium", "medium-replay")):
        save_dataset(os.path.join(directory, f"walker_{task}_{quality}.npz"), random_rollouts(task, 1, seed))


def checkpoint_networks(run_dir) -> dict:
    """The learner's networks and log_alpha from run_dir's checkpoint.pt, by name (optimiser states left out)."""
    learner = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)["learner"]
    return {name: state for name, state in learner.items() if not name.endswith("optimizer")}


def kill_at_first_checkpoint(script: str, *flags: str, checkpoint, cwd) -> None:
    """Start one of the scripts and SIGKILL it as soon as `checkpoint` exists (or let it end first)."""
    process = start_script(script, *flags, cwd=cwd)
    while not checkpoint.exists() and process.is_alive():
        time.sleep(0.02)
    process.kill()
    process.join()


# A fresh `python script.py` spends ~6 s importing torch, torch._dynamo (the first Adam step imports it),
# dm_control and tensorboard before its first line, and most tests start one or more. So run_script forks
# each one from a server that has imported them once (multiprocessing's forkserver: a clean interpreter that
# has run nothing else), with the argv, sys.path, working directory and environment of `python script.py`.
# The tests of what a user's own fresh interpreter does (every script end to end, the same numbers from two
# processes) pass fresh=True.
SERVER = multiprocessing.get_context("forkserver")
SERVER.set_forkserver_preload(["preloaded", "torch", "torch._dynamo", "torch.utils.tensorboard", "dm_control.suite",
                               "tyro", "tqdm"])


@functools.cache
def fresh_sys_path() -> list[str]:
    """sys.path of a fresh interpreter after the script's own folder (pytest and conftest add theirs)."""
    shown = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
                           capture_output=True, text=True, check=True)
    return json.loads(shown.stdout)


def run_script(script: str, *flags: str, cwd, timeout: int = 600, fresh: bool = False) -> subprocess.CompletedProcess:
    """Run one of the repository's scripts as a user would, from `cwd` (where runs/ is written): forked from the
    preloaded server, or in a fresh interpreter where `fresh`."""
    command = [sys.executable, os.path.join(ROOT, script), *flags]
    if fresh:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    with tempfile.TemporaryDirectory() as captured:
        stdout, stderr = os.path.join(captured, "stdout"), os.path.join(captured, "stderr")
        child = start_script(script, *flags, cwd=cwd, stdout=stdout, stderr=stderr)
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(command, timeout)
        with open(stdout) as out, open(stderr) as err:
            return subprocess.CompletedProcess(command, child.exitcode, out.read(), err.read())


def start_script(script: str, *flags: str, cwd, stdout=os.devnull, stderr=os.devnull) -> multiprocessing.Process:
    """One of the scripts forked from the preloaded server as run_script does, not waited for (a test that signals
    it: .kill() is SIGKILL, .terminate() SIGTERM, .join() waits, .exitcode is its status); output to the files."""
    child = SERVER.Process(target=preloaded.run_as_main, args=(os.path.join(ROOT, script), list(flags), str(cwd),
                                                               dict(os.environ), fresh_sys_path(), str(stdout),
                                                               str(stderr)))
    child.start()
    return child
