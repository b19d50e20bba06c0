"""Checkpoints and resume after a real kill or SIGTERM, evaluation only, the NaN guard, and the bad-input matrix."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import (ROOT, TASK_FLAGS, TINY_FLAGS, checkpoint_networks, kill_at_first_checkpoint, random_rollouts,
                      run_script, start_script)

import csac

SCRIPT_FLAGS = {**TASK_FLAGS, "hcsac.py": ["--relabel-every", "2"]}
RESUME_FLAGS = ["--epochs", "4", "--hidden-dim", "32", "--num-layers", "2", "--batch-size", "256",
                "--eval-every", "1", "--eval-episodes", "1"]


def final_returns(run_dir) -> dict:
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    return {task: entry["final"]["returns"] for task, entry in results["tasks"].items()}, results


@pytest.mark.parametrize("script", SCRIPT_FLAGS)
def test_killed_or_preempted_run_resumes_to_the_same_results(script, tiny_data_dir, tmp_path):
    flags = ["--data-dir", tiny_data_dir, *SCRIPT_FLAGS[script], *RESUME_FLAGS]
    result = run_script(script, *flags, "--run-name", "whole", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, whole = final_returns(tmp_path / "runs" / "whole")

    checkpoint = tmp_path / "runs" / "killed" / "checkpoint.pt"
    kill_at_first_checkpoint(script, *flags, "--run-name", "killed", checkpoint=checkpoint, cwd=tmp_path)
    killed_at = torch.load(checkpoint, weights_only=False)
    assert killed_at["epoch"] < 4, "the run finished before it could be killed"
    assert not (tmp_path / "runs" / "killed" / "results.json").exists()

    result = run_script(script, "--resume", "runs/killed", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming runs/killed at gradient step {killed_at['global_step']} (" in result.stdout
    assert_same_run(tmp_path / "runs" / "killed", whole)

    # SIGTERM (preemption): the run checkpoints after the current gradient step, mid-epoch, and exits with 75.
    checkpoint = tmp_path / "runs" / "stopped" / "checkpoint.pt"
    process = start_script(script, *flags, "--run-name", "stopped", cwd=tmp_path, stderr=tmp_path / "stopped.err")
    while not checkpoint.exists() and process.is_alive():
        time.sleep(0.02)
    first_step = torch.load(checkpoint, weights_only=False)["global_step"]
    process.terminate()  # SIGTERM
    process.join()
    stderr = (tmp_path / "stopped.err").read_text()
    assert process.exitcode == 75, stderr
    assert "SIGTERM: finishing the current gradient step, then a checkpoint\n" in stderr
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["global_step"] > first_step and "resume_at" in saved  # a fresh checkpoint, taken mid-epoch
    stop = f"SIGTERM at gradient step {saved['global_step']} (in epoch {saved['epoch'] + 1})"
    assert f"\nstopped: {stop}" in stderr and "--resume runs/stopped" in stderr  # on a line of its own
    result = run_script(script, "--resume", "runs/stopped", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming runs/stopped at {stop[len('SIGTERM at '):]}" in result.stdout  # the stop's own words
    assert_same_run(tmp_path / "runs" / "stopped", whole)


def evaluation_steps(results: dict) -> dict:
    return {task: [(h["epoch"], h["step"]) for h in entry["history"]] for task, entry in results["tasks"].items()}


def assert_same_run(run_dir, whole):
    """The same evaluations at the same steps and the same final weights up to float rounding, not the same returns:
    about 3 in 100 processes (fresh or resumed) take one of two alternative results in some op's last bits
    (weights 4e-8 apart; cause not found), and 1000-step walker episodes can amplify that into other returns.
    A resume that loses the torch RNG state ends 6e-4 (actor) and 2e-3 (critic) apart here."""
    _, results = final_returns(run_dir)
    assert results["gradient_steps"] == whole["gradient_steps"]
    assert evaluation_steps(results) == evaluation_steps(whole)
    torch.testing.assert_close(checkpoint_networks(run_dir),
                               checkpoint_networks(os.path.join(os.path.dirname(run_dir), "whole")), rtol=0, atol=1e-5)
    assert results.get("relabel", []) == [] or [e["d_star_transitions"] for e in results["relabel"]] == \
        [e["d_star_transitions"] for e in whole["relabel"]]


def test_eval_only_reproduces_the_final_evaluation(tiny_data_dir, tmp_path):
    result = run_script("mtcsac.py", "--data-dir", tiny_data_dir, "--run-name", "r", "--save-model", *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected, _ = final_returns(tmp_path / "runs" / "r")
    for name in ("checkpoint.pt", "model.pt"):
        result = run_script("mtcsac.py", "--eval-only", "--checkpoint", f"runs/r/{name}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        with open(tmp_path / "runs" / "r" / "eval.json") as f:
            report = json.load(f)
        assert {task: entry["returns"] for task, entry in report["tasks"].items()} == expected
        assert "walk:" in result.stdout and "±" in result.stdout
        means = ", ".join(f"{task} {entry['mean']:.1f}" for task, entry in report["tasks"].items())
        assert result.stdout.splitlines()[-1] == f"done: {means} over 2 episodes each; written to runs/r/eval.json"


def test_capture_video_without_a_renderer_says_what_is_missing(tiny_data_dir, tmp_path):
    result = run_script("bc.py", "--data-dir", tiny_data_dir, "--run-name", "v", *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    env = {**os.environ, "MUJOCO_GL": "disable"}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bc.py"), "--eval-only", "--checkpoint",
                             "runs/v/checkpoint.pt", "--capture-video"], cwd=tmp_path, capture_output=True, text=True,
                            env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "MUJOCO_GL=osmesa" in result.stderr and "libosmesa6" in result.stderr


def test_nan_guard_names_the_first_bad_step_and_loss():
    guard = csac.StepMetrics(torch.device("cpu"))
    finite = {"critic_loss": torch.tensor(1.0), "actor_loss": torch.tensor(2.0)}
    guard.observe(finite, 1)
    guard.check(epoch=1, checkpoint_path="absent.pt")  # nothing bad yet
    guard.observe({"critic_loss": torch.tensor(float("nan")), "actor_loss": torch.tensor(2.0)}, 2)
    guard.observe({"critic_loss": torch.tensor(float("inf")), "actor_loss": torch.tensor(float("inf"))}, 3)
    guard.observe(finite, 4)
    with pytest.raises(csac.TrainingDiverged, match=r"non-finite critic_loss at gradient step 2 \(epoch 7\)"):
        guard.check(epoch=7, checkpoint_path="absent.pt")


def test_step_metrics_are_means_since_the_last_pop():
    metrics = csac.StepMetrics(torch.device("cpu"))
    for step, loss in enumerate([1.0, 2.0, 6.0], start=1):
        metrics.observe({"critic_loss": torch.tensor(loss), "alpha": torch.tensor(0.5)}, step)
    assert metrics.pop_means() == {"critic_loss": 3.0, "alpha": 0.5} and metrics.count == 0
    metrics.observe({"critic_loss": torch.tensor(4.0), "alpha": torch.tensor(1.0)}, 4)
    assert metrics.pop_means() == {"critic_loss": 4.0, "alpha": 1.0}


def test_diverging_run_stops_with_a_message(tiny_data_dir, tmp_path):
    result = run_script("csac.py", "--data-dir", tiny_data_dir, "--run-name", "d", "--critic-lr", "1e30",
                        "--actor-lr", "1e30", *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "non-finite" in result.stderr and "at gradient step" in result.stderr
    assert not (tmp_path / "runs" / "d" / "results.json").exists()


# ------------------------------------------------------------------ bad-input matrix: one line, non-zero exit
def write_datasets(directory, corrupt) -> str:
    for task in ("walk", "run"):
        data = random_rollouts(task, 1, seed=0)
        corrupt(data)
        np.savez(directory / f"walker_{task}_medium.npz", **data)
    return str(directory)


def corrupt_file(directory):
    write_datasets(directory, lambda d: None)
    (directory / "walker_walk_medium.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    return str(directory)


BAD_DATA = {
    "missing file": (lambda d: str(d), "walker_walk_medium.npz: no such dataset file"),
    "corrupt npz": (corrupt_file, "walker_walk_medium.npz: not a readable .npz file"),
    "missing key": (lambda d: write_datasets(d, lambda x: x.pop("actions")), "missing key(s) ['actions']"),
    "wrong observation width": (lambda d: write_datasets(d, lambda x: x.update(observations=x["observations"][:, :23])),
                                "'observations' has shape (1000, 23), expected (1000, 24)"),
    "NaN in rewards": (lambda d: write_datasets(d, lambda x: x["rewards"].__setitem__(3, np.nan)),
                       "'rewards' contains NaN or inf"),
}


def assert_one_line_error(result, message):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_dataset(case, tmp_path):
    make, message = BAD_DATA[case]
    data_dir = make(tmp_path)
    result = run_script("bc.py", "--data-dir", data_dir, "--task", "walk", cwd=tmp_path)
    assert_one_line_error(result, message)


BAD_FLAGS = {
    "unknown task": (["--task", "jump"], "unknown task 'jump'"),
    "unknown dataset": (["--dataset", "expert"], "unknown dataset 'expert'"),
    "zero eval episodes": (["--eval-episodes", "0"], "--eval-episodes 0 is outside its range [1, inf)"),
    "negative epochs": (["--epochs", "-3"], "--epochs -3 is outside its range [1, inf)"),
    "resume without checkpoint": (["--resume", "runs"], "runs: no checkpoint.pt to resume from"),
    "eval-only without checkpoint": (["--eval-only"], "--eval-only needs --checkpoint"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_flags(case, tiny_data_dir, tmp_path):
    flags, message = BAD_FLAGS[case]
    (tmp_path / "runs").mkdir()
    result = run_script("csac.py", "--data-dir", tiny_data_dir, *flags, cwd=tmp_path)
    assert_one_line_error(result, message)


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ckpt")
    result = run_script("csac.py", "--data-dir", tiny_data_dir, "--run-name", "c", *TINY_FLAGS, "--epochs", "1", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


@pytest.mark.parametrize("script,flags,message", [
    ("mtcsac.py", ["--eval-only", "--checkpoint", "runs/c/checkpoint.pt"], "a checkpoint of 'csac', not of 'mtcsac'"),
    ("bc.py", ["--resume", "runs/c"], "a checkpoint of 'csac', not of 'bc'"),
    ("csac.py", ["--eval-only", "--checkpoint", "runs/c/checkpoint.pt", "--hidden-dim", "64"],
     "--hidden-dim 32 -> 64"),
    ("csac.py", ["--resume", "runs/c", "--batch-size", "128"], "--batch-size 256 -> 128"),
    ("csac.py", ["--eval-only", "--checkpoint", "runs/c/absent.pt"], "runs/c/absent.pt: no such checkpoint"),
])
def test_bad_checkpoints(script, flags, message, tiny_checkpoint):
    result = run_script(script, *flags, cwd=tiny_checkpoint)
    assert_one_line_error(result, message)


def test_fp32_updates_give_the_same_bits_with_one_and_two_threads():
    """csac.py sets MKL_CBWR=AUTO,STRICT: without it MKL's matmuls sum in another order with one thread than with
    two, and a run resumed on a machine with fewer cores would end elsewhere."""
    args = csac.Args(task="run", hidden_dim=32, num_layers=2, batch_size=256)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(256, 24, generator=generator), torch.rand(256, 6, generator=generator) * 2 - 1,
                torch.rand(256, generator=generator), torch.randn(256, 24, generator=generator)) for _ in range(10)]
    weights, threads_before = {}, torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            learner = csac.Learner(args, torch.device("cpu"))
            for batch in batches:
                learner.update(*batch)
            weights[threads] = [p.detach().clone() for p in [*learner.actor.parameters(), *learner.critic.parameters()]]
    finally:
        torch.set_num_threads(threads_before)
    assert all(torch.equal(one, two) for one, two in zip(weights[1], weights[2]))


@pytest.mark.parametrize("script", ["csac.py", "mtcsac.py"])
def test_results_record_the_data_and_a_resume_on_changed_data_is_refused(script, tiny_data_dir, tmp_path):
    import hashlib
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data_dir)
    flags = ["--data-dir", str(data_dir), *TASK_FLAGS[script], *TINY_FLAGS, "--epochs", "1"]
    result = run_script(script, *flags, "--run-name", "r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, results = final_returns(tmp_path / "runs" / "r")
    tasks = ["run"] if script == "csac.py" else ["walk", "run"]
    names = [f"walker_{task}_medium.npz" for task in tasks]
    assert results["data"] == {name: hashlib.sha256((data_dir / name).read_bytes()).hexdigest() for name in names}
    # the same files in another folder (a checkout at another path): the run continues on them, and records
    # each process's machine beside its code
    moved = tmp_path / "moved"
    data_dir.rename(moved)
    result = run_script(script, "--resume", "runs/r", "--epochs", "2", "--data-dir", str(moved), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, resumed = final_returns(tmp_path / "runs" / "r")
    assert resumed["data"] == results["data"] and resumed["args"]["data_dir"] == str(moved)
    assert len(resumed["cpus"]) == len(resumed["code"]) == 2 and resumed["cpus"][0] == results["cpus"][0]
    # a checkpoint from before `cpus` was kept: its processes' machines are unknown, not guessed
    checkpoint = tmp_path / "runs" / "r" / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=False)
    del saved["cpus"]
    torch.save(saved, checkpoint)
    result = run_script(script, "--resume", "runs/r", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, resumed = final_returns(tmp_path / "runs" / "r")
    assert resumed["cpus"] == [None, None, results["cpus"][0]] and len(resumed["code"]) == 3
    # another file under the same name (the medium-replay episode): the run does not continue on it
    shutil.copy(moved / f"walker_{tasks[-1]}_medium-replay.npz", moved / names[-1])
    result = run_script(script, "--resume", "runs/r", "--epochs", "4", cwd=tmp_path)
    assert_one_line_error(result, f"runs/r: {names[-1]} changed since the run started")
