"""The benchmark's FLOP count from layer shapes agrees with torch's own FLOP counter on a real update; the op-by-op
probes compute the gradients autograd computes."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.utils.cpp_extension
from torch.utils.flop_counter import FlopCounterMode

from conftest import ROOT, run_script

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_update  # noqa: E402
import critic_ops  # noqa: E402


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


@pytest.mark.parametrize("script,flags,message", [
    ("benchmarks/bench_update.py", ["--rounds", "0"], "--rounds 0 is outside its range [1, inf)"),
    ("benchmarks/bench_update.py", ["--repeats", "0"], "--repeats 0 is outside its range [1, inf)"),
    ("benchmarks/bench_update.py", ["--threads", "0"], "--threads 0 is outside its range [1, inf)"),
    ("benchmarks/bench_update.py", ["--warmup", "-1"], "--warmup -1 is outside its range [0, inf)"),
    ("benchmarks/critic_ops.py", ["--chunks", "512", "0"], "--chunks 0 is outside its range [1, inf)"),
    ("scripts/determinism.py", ["--runs", "1"], "--runs 1 is outside its range [2, inf)"),
])
def test_benchmark_and_check_flags_out_of_range_exit_with_one_line(script, flags, message, tmp_path):
    result = run_script(script, *flags, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {message}"]


def test_benchmark_and_check_scripts_import_without_warnings():
    """The tests above fork these scripts from a server that has imported torch and the rest already, so a warning
    printed at import would not show there: one fresh interpreter imports all four."""
    code = ("import sys; sys.path[:0] = [{!r}, {!r}, {!r}]; "
            "import bench_update, critic_ops, fused_cpu_probe, determinism").format(
        os.path.join(ROOT, "benchmarks"), os.path.join(ROOT, "scripts"), ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="oneDNN bf16 not on this CPU")
def test_critic_ops_probe_computes_autograds_gradients():
    """critic_ops.py times the ops of one member's pass; they must be the real forward and backward: its weight and
    bias gradients equal autograd's for sum(grad_q * Q(x)) on a tiny member (fp32 reference, bf16 tolerance)."""
    torch.manual_seed(0)
    rows, dims = 7, [30, 8, 8, 1]
    params = [(torch.randn(o, i) / i ** 0.5, torch.randn(o) * 0.1) for i, o in zip(dims, dims[1:])]
    x, grad_q = torch.randn(rows, 30), torch.randn(rows, 1)
    leaves = [t.clone().requires_grad_() for pair in params for t in pair]
    h = x
    for k in range(3):
        h = torch.nn.functional.linear(h, leaves[2 * k], leaves[2 * k + 1])
        h = torch.relu(h) if k < 2 else h
    (h * grad_q).sum().backward()
    bf16 = [tuple(t.to(torch.bfloat16) for t in pair) for pair in params]
    probe = critic_ops.member_pass(x.to(torch.bfloat16), bf16, grad_q.to(torch.bfloat16), None)
    # the probe returns output weight, output bias, layer 2 weight, bias, layer 1 weight, bias
    expected = [leaves[4].grad, leaves[5].grad, leaves[2].grad, leaves[3].grad, leaves[0].grad, leaves[1].grad]
    for got, want in zip(probe, expected):
        torch.testing.assert_close(got.float().reshape(want.shape), want, atol=0.05, rtol=0.05)


@pytest.mark.skipif(not (torch.ops.mkldnn._is_mkldnn_bf16_supported() and shutil.which("g++")
                         and torch.utils.cpp_extension.is_ninja_available()),
                    reason="needs oneDNN bf16, g++ and ninja to build the probe's kernels")
def test_fused_cpu_probe_gives_eagers_gradients(monkeypatch):
    """The probe's fused C++ kernels, put into csac's critic, give one update's critic and actor gradients equal to
    eager's up to bf16 rounding (their sums stay in fp32), and the fused path is really taken."""
    import csac
    import fused_cpu_probe
    calls = []
    apply = fused_cpu_probe.FusedCriticEnsemble.apply
    monkeypatch.setattr(fused_cpu_probe.FusedCriticEnsemble, "apply", lambda *a: calls.append(1) or apply(*a))
    assert fused_cpu_probe.gradient_check(csac) < 1e-2
    assert len(calls) == 3  # the actor loss's frozen critic, the target critic and the critic loss's call
    assert csac.Critic.forward.__name__ == "forward" and csac.Critic.forward.__qualname__ == "Critic.forward"
