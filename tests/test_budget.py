"""A budget of gradient steps (--max-steps) with evaluations at fixed steps (--eval-every-steps): the equal-steps
reading of Table 1 takes a multi-task run of 2B steps at its evaluation at step B, so that evaluation must be
what a B-step run would have shown, and a run killed after an evaluation within an epoch must resume exactly."""

import pytest
import torch
from conftest import kill_at_first_checkpoint, run_script
from test_robustness import assert_same_run, final_returns

import hcsac
import mtcsac

# 7 gradient steps per epoch on the tiny data (2000 transitions, batch 256): step 10 falls within epoch 2.
TINY_NETWORK = {"hidden_dim": 32, "num_layers": 2, "batch_size": 256, "eval_episodes": 2, "seed": 3}


def without_timing(relabel_log: list[dict]) -> list[dict]:
    return [{key: value for key, value in entry.items() if key != "seconds"} for entry in relabel_log]


@pytest.mark.parametrize("module", [mtcsac, hcsac], ids=lambda m: m.__name__)
def test_the_evaluation_at_step_b_of_a_longer_run_is_the_final_of_a_b_step_run(module, tiny_data_dir, tmp_path,
                                                                              monkeypatch):
    """Bitwise: the same batches in the same order, constant learning rates, and evaluations that touch neither
    the weights nor the RNG; in hcsac the relabelings before step B are the same too."""
    monkeypatch.chdir(tmp_path)
    flags = {**TINY_NETWORK, "data_dir": tiny_data_dir, "eval_every_steps": 5,
             **({"relabel_every": 1} if module is hcsac else {})}
    short = module.train(module.Args(**flags, max_steps=10, run_name="short"))
    longer = module.train(module.Args(**flags, max_steps=20, run_name="longer"))
    assert (short["gradient_steps"], longer["gradient_steps"]) == (10, 20)
    for task in module.TASKS:
        history = longer["tasks"][task]["history"]
        assert [evaluation["step"] for evaluation in history] == [5, 10, 15, 20]
        assert [evaluation["step"] for evaluation in short["tasks"][task]["history"]] == [5, 10]
        assert history[1]["epoch"] == 2  # step 10 is within epoch 2: the short run stopped mid-epoch
        assert history[1]["returns"] == short["tasks"][task]["final"]["returns"]
        assert history[0]["returns"] == short["tasks"][task]["history"][0]["returns"]
    if module is hcsac:  # relabeled after epoch 1 in both (7 steps); the longer run again after epoch 2 (step 15)
        assert len(short["relabel"]) == 1 and len(longer["relabel"]) == 2
        assert without_timing(short["relabel"]) == without_timing(longer["relabel"][:1])


def test_a_run_killed_after_an_evaluation_within_an_epoch_resumes_to_the_same_results(tiny_data_dir, tmp_path):
    flags = ["--data-dir", tiny_data_dir, "--relabel-every", "1", "--max-steps", "20", "--eval-every-steps", "5",
             *[f"--{name.replace('_', '-')}={value}" for name, value in TINY_NETWORK.items()]]
    whole = run_script("hcsac.py", *flags, "--run-name", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    _, whole_results = final_returns(tmp_path / "runs" / "whole")

    checkpoint = tmp_path / "runs" / "killed" / "checkpoint.pt"
    kill_at_first_checkpoint("hcsac.py", *flags, "--run-name", "killed", checkpoint=checkpoint, cwd=tmp_path)
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["global_step"] < 20 and saved["global_step"] % 5 == 0, "the run finished before it could be killed"
    assert "resume_at" in saved  # an evaluation's checkpoint within an epoch: that epoch's batch order
    resumed = run_script("hcsac.py", "--resume", "runs/killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "runs" / "killed", whole_results)
    _, results = final_returns(tmp_path / "runs" / "killed")
    assert [e["step"] for e in results["tasks"]["walk"]["history"]] == [5, 10, 15, 20]


def test_a_finished_step_budget_resumed_from_its_final_checkpoint_trains_no_further(tiny_data_dir, tmp_path):
    """The final checkpoint of a run stopped mid-epoch by --max-steps says 'after epoch 2': resuming it (a grid
    whose results copy was lost does) writes the same results, without a step or an evaluation more."""
    flags = ["--data-dir", tiny_data_dir, "--max-steps", "10", "--eval-every-steps", "5",
             *[f"--{name.replace('_', '-')}={value}" for name, value in TINY_NETWORK.items()]]
    for command in ([*flags, "--run-name", "r"], ["--resume", "runs/r"]):
        result = run_script("mtcsac.py", *command, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        if command[0] != "--resume":
            _, finished = final_returns(tmp_path / "runs" / "r")
            checkpoint = torch.load(tmp_path / "runs" / "r" / "checkpoint.pt", weights_only=False)
            assert (checkpoint["epoch"], checkpoint["global_step"]) == (2, 10)
    _, again = final_returns(tmp_path / "runs" / "r")
    assert again["gradient_steps"] == 10 and again["tasks"] == finished["tasks"]
