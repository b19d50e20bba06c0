"""The TD3 collector on tiny budgets: the window rule, the files it writes, giving up, and resuming after
SIGTERM or SIGKILL to exactly the files of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import run_script, start_script
from test_data import check_dataset

from collect_td3 import best_window, find_window
from describe import episode_returns
from walker_data import load_dataset

# Two-episode windows on a 32-wide TD3: learning starts after one random episode, the medium-replay window
# (target 0) is episodes 0-1, and the medium window the first two after them whose mean reaches the target.
TINY = ["--task", "run", "--window-episodes", "2", "--hidden-dim", "32", "--batch-size", "32", "--learning-starts", "1000",
        "--checkpoint-every", "1000", "--medium-replay-target", "0"]
# Both targets 0: the windows are episodes 0-1 and 2-3, so a whole run ends at env step 4000.
REACHABLE = ["--medium-target", "0", "--total-timesteps", "6000"]


def collect(tmp_path, *flags: str, fresh: bool = False) -> subprocess.CompletedProcess:
    return run_script("data/collect_td3.py", *TINY, "--out-dir", "out", *flags, cwd=tmp_path, fresh=fresh)


def read_log(path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_find_window_on_known_returns():
    returns = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert find_window(returns, 2, 25.0, 0) == 1  # (20 + 30) / 2 = 25 reaches 25
    assert find_window(returns, 2, 25.0, 3) == 3  # the search starts after an earlier window
    assert find_window(returns, 3, 55.0, 0) is None
    assert find_window(returns, 7, 0.0, 0) is None  # fewer episodes than a window
    assert best_window(returns, 3, 1) == 50.0 and best_window(returns, 7, 0) is None


def test_collector_writes_two_disjoint_windows_of_the_training_run(tmp_path):
    result = collect(tmp_path, *REACHABLE, fresh=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # a fresh interpreter prints nothing else (the other tests' runs are forked)
    log = read_log(tmp_path / "out" / "walker_run_training_returns.csv")
    assert [row["episode"] for row in log] == [0, 1, 2, 3]  # stopped as soon as the medium window existed
    assert [row["env_step"] for row in log] == [1000, 2000, 3000, 4000]
    provenance = json.loads((tmp_path / "out" / "walker_run_collection.json").read_text())
    assert provenance["windows"]["medium-replay"]["first_episode"] == 0
    assert provenance["windows"]["medium"]["first_episode"] == 2
    assert provenance["sittings"][0]["code"]["commit"] and provenance["precision"] in ("fp32", "bf16")
    for quality, first in (("medium-replay", 0), ("medium", 2)):
        data = load_dataset(str(tmp_path / "out" / f"walker_run_{quality}.npz"), "run")
        check_dataset(data, "run")
        assert len(data["rewards"]) == 2000
        # the file's episodes are the logged training episodes: their returns agree (float32 sums)
        expected = [log[first]["return_run"], log[first + 1]["return_run"]]
        np.testing.assert_allclose(episode_returns(data), expected, rtol=1e-5)
        np.testing.assert_allclose(data["rewards_walk"].reshape(2, 1000).sum(1),
                                   [log[first]["return_walk"], log[first + 1]["return_walk"]], rtol=1e-5)
        assert provenance["windows"][quality]["mean_return"] == pytest.approx(np.mean(expected), rel=1e-5)


def test_collector_gives_up_with_one_line_and_can_continue(tmp_path):
    result = collect(tmp_path, "--medium-target", "1000", "--total-timesteps", "3000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "no 2-episode medium window reached 1000.0 within 3000 env steps" in result.stderr
    assert "(no full window yet)" in result.stderr and not (tmp_path / "out" / "walker_run_medium.npz").exists()
    again = collect(tmp_path, "--medium-target", "1000", "--total-timesteps", "3000")  # without --resume: refused
    assert again.returncode == 1 and "pass --resume" in again.stderr
    other = collect(tmp_path, "--medium-target", "900", "--total-timesteps", "4000", "--resume")
    assert other.returncode == 1 and "--medium-target 1000.0 -> 900.0" in other.stderr
    more = collect(tmp_path, "--medium-target", "1000", "--total-timesteps", "4000", "--resume")
    assert more.returncode == 1 and "within 4000 env steps (its best window's mean return is" in more.stderr
    assert len(read_log(tmp_path / "out" / "walker_run_training_returns.csv")) == 4


def final_state(tmp_path) -> tuple[dict, bytes]:
    checkpoint = torch.load(tmp_path / "runs" / "collect_td3" / "walker_run_seed0.pt", weights_only=True)
    return checkpoint, (tmp_path / "out" / "walker_run_training_returns.csv").read_bytes()


def assert_same_state(a: dict, b: dict, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if key not in ("elapsed", "sittings", "args"):
                assert_same_state(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def start_and_interrupt(tmp_path, sig: int, flags: list[str]) -> int:
    """Start a collection and send `sig` once its first checkpoint exists; returns the exit code."""
    checkpoint = tmp_path / "runs" / "collect_td3" / "walker_run_seed0.pt"
    stderr = tmp_path / "collect.err"
    process = start_script("data/collect_td3.py", *TINY, "--out-dir", "out", *flags, cwd=tmp_path, stderr=stderr)
    deadline = time.time() + 120
    while not checkpoint.exists() and process.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert process.is_alive(), f"the collection ended before its first checkpoint: {stderr.read_text()}"
    os.kill(process.pid, sig)
    process.join(timeout=120)
    assert not (tmp_path / "out" / "walker_run_medium.npz").exists()  # interrupted before the end
    return process.exitcode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    assert collect(folder, *REACHABLE).returncode == 0
    return folder


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_an_interrupted_collection_resumes_to_the_same_files(tmp_path, uninterrupted, sig):
    code = start_and_interrupt(tmp_path, sig, REACHABLE)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 75)
    resumed = collect(tmp_path, *REACHABLE, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    (whole_checkpoint, whole_log), (checkpoint, log) = final_state(uninterrupted), final_state(tmp_path)
    assert_same_state(whole_checkpoint, checkpoint)
    assert whole_log == log
    for quality in ("medium", "medium-replay"):
        np.testing.assert_equal(dict(np.load(uninterrupted / "out" / f"walker_run_{quality}.npz")),
                                dict(np.load(tmp_path / "out" / f"walker_run_{quality}.npz")))


def test_a_checkpoint_that_the_physics_does_not_replay_is_refused(tmp_path):
    assert collect(tmp_path, "--medium-target", "1000", "--total-timesteps", "2000").returncode == 1
    path = tmp_path / "runs" / "collect_td3" / "walker_run_seed0.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["log"][1]["return"] += 1e-9  # as if another machine's MuJoCo had given other bits
    torch.save(checkpoint, path)
    result = collect(tmp_path, "--medium-target", "1000", "--total-timesteps", "3000", "--resume")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "replaying episode 1 gives return" in result.stderr and "physics differs" in result.stderr
    path.write_bytes(b"not a checkpoint")
    garbage = collect(tmp_path, "--medium-target", "1000", "--total-timesteps", "3000", "--resume")
    assert garbage.returncode == 1 and "not a readable checkpoint" in garbage.stderr
    assert garbage.stderr.strip().count("\n") == 0
