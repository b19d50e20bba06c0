"""The benchmark's FLOP count from layer shapes agrees with torch's own FLOP counter on a real update."""

import os
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_update  # noqa: E402


@pytest.mark.parametrize("algorithm", ["bc", "csac", "mtcsac", "hcsac"])
def test_update_gflop_matches_torch_flop_counter(algorithm):
    module = bench_update.MODULES[algorithm]
    args = module.Args(hidden_dim=64, num_layers=2, batch_size=32)
    learner = module.Learner(args, torch.device("cpu"))
    batch = bench_update.random_batch(module, args, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        learner.update(*batch)
    counted = counter.get_total_flops() / 1e9
    assert bench_update.update_gflop(algorithm, args) == pytest.approx(counted, rel=0.01)
