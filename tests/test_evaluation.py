"""Evaluation: episodes stepped in worker processes (--eval-workers) give the returns of stepping them here."""

import importlib

import pytest
import torch


@pytest.mark.parametrize("name", ["bc", "csac", "mtcsac", "hcsac"])
def test_evaluation_in_worker_processes_is_bitwise_the_serial_one(name):
    """Three episodes split over two workers (two and one): the policy's forward stays one batched call here, so
    the actions, and the returns, are the same bits as stepping the environments in this process."""
    module = importlib.import_module(name)
    torch.manual_seed(0)
    args = module.Args(hidden_dim=32, num_layers=2)
    actor = module.Learner(args, torch.device("cpu")).actor
    serial = module.evaluate(actor, "walk", 3, 7, torch.device("cpu"))
    workers = module.EvaluationWorkers(2)
    try:
        parallel = module.evaluate(actor, "walk", 3, 7, torch.device("cpu"), workers)
        again = module.evaluate(actor, "walk", 3, 8, torch.device("cpu"), workers)  # the workers serve many rounds
    finally:
        workers.close()
    assert parallel == serial and len(set(serial)) == 3  # three different episodes, each the same bits
    assert again == module.evaluate(actor, "walk", 3, 8, torch.device("cpu")) and again != serial


def test_a_failure_in_a_worker_is_raised_in_the_training_process():
    import hcsac

    workers = hcsac.EvaluationWorkers(1)
    try:
        with pytest.raises(ValueError, match="walker"):
            workers.reset("fly", [1])  # no such task: dm_control's error, raised here
    finally:
        workers.close()


def test_default_worker_count_steps_here_on_cpu_and_in_workers_on_cuda(monkeypatch):
    import hcsac

    started = []
    monkeypatch.setattr(hcsac, "EvaluationWorkers", lambda count: started.append(count) or count)
    monkeypatch.setattr(hcsac.os, "cpu_count", lambda: 16)
    assert hcsac.evaluation_workers(hcsac.Args(), torch.device("cpu")) is None
    assert hcsac.evaluation_workers(hcsac.Args(), torch.device("cuda")) == 10  # one per episode
    assert hcsac.evaluation_workers(hcsac.Args(eval_episodes=40), torch.device("cuda")) == 15  # the cores but one
    assert hcsac.evaluation_workers(hcsac.Args(eval_workers=3), torch.device("cpu")) == 3
    assert hcsac.evaluation_workers(hcsac.Args(eval_workers=0), torch.device("cuda")) is None
