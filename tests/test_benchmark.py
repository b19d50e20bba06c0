"""The benchmark's FLOP count from layer shapes agrees with torch's own FLOP counter on a real update."""

import os
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_update  # noqa: E402


@pytest.mark.parametrize("algorithm", ["bc", "csac", "mtcsac", "hcsac"])
def test_update_gflop_matches_torch_flop_counter(algorithm, monkeypatch):
    module = bench_update.MODULES[algorithm]
    if hasattr(module, "onednn_fusion_applies"):  # the counter does not know oneDNN's fused op; same matmuls
        monkeypatch.setattr(module, "onednn_fusion_applies", lambda x: False)
    args = module.Args(hidden_dim=64, num_layers=2, batch_size=32)
    learner = module.Learner(args, torch.device("cpu"))
    batch = bench_update.random_batch(module, args, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        learner.update(*batch)
    counted = counter.get_total_flops() / 1e9
    assert bench_update.update_gflop(algorithm, args) == pytest.approx(counted, rel=0.01)


def test_speed_up_is_the_median_of_paired_rounds():
    """Round 3 ran while the machine was slow for both: pairing keeps it from deciding the ratio."""
    before, after = [10.0, 40.0, 12.0], [5.0, 20.0, 12.0]
    assert bench_update.median_ratio(before, after) == 2.0  # the ratio of the medians would say 1.0


@pytest.mark.parametrize("flag,value", [("--rounds", "0"), ("--repeats", "0"), ("--threads", "0"), ("--warmup", "-1")])
def test_benchmark_flags_out_of_range_exit_with_one_line(flag, value):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_update.py"), flag, value],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {flag} {value} is outside its range " +
                                                  ("[0, inf)" if flag == "--warmup" else "[1, inf)")]
