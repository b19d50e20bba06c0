"""The benchmark's FLOP count from layer shapes agrees with torch's own FLOP counter on a real update; the op-by-op
probes compute the gradients autograd computes; the benchmarks run to the end with their extras, check their inputs
before any timing and end on Ctrl-C with one line."""

import os
import shutil
import signal
import subprocess
import sys
import time

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
    ("benchmarks/bench_collect.py", ["--rounds", "0"], "--rounds 0 is outside its range [1, inf)"),
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


# The extras at their smallest: a tiny relabeling pass, one evaluation episode per task, a small peak matmul.
TINY_EXTRAS = ["--relabel-rows", "1000", "--eval-episodes", "1", "--threads", "1", "--peak-matmul", "64"]


def test_bench_update_runs_to_the_end_with_its_extras(tmp_path):
    """The update row, hcsac.py's own relabeling pass and an evaluation round, each printed with its figure."""
    result = run_script("benchmarks/bench_update.py", "--sizes", "cpu", "--algorithms", "hcsac", "--precisions", "fp32",
                        "--repeats", "1", "--warmup", "0", *TINY_EXTRAS, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("| hcsac | cpu | fp32 | ") and "failed" not in line for line in lines), result.stdout
    assert any(line.startswith("relabeling pass over 1000 transitions (paper size, fp32): ") for line in lines)
    assert any(line.startswith("evaluation round (1 episodes per task, paper-size actor): ") for line in lines)


def test_a_failing_part_leaves_the_next_devices_rows(monkeypatch, capsys):
    """On a GPU machine the CUDA rows come after the CPU's: a fault in one part (here the first device's relabeling
    pass) is reported and the run goes on to the second device (a CPU standing in for the GPU), then exits 1."""
    relabel_calls = []

    def relabel_failing_first(device, rows):
        relabel_calls.append(device)
        if len(relabel_calls) == 1:
            raise RuntimeError("boom")
        return 0.5

    monkeypatch.setattr(bench_update, "benchmark_devices", lambda args: [torch.device("cpu")] * 2)
    monkeypatch.setattr(bench_update, "time_relabel", relabel_failing_first)
    monkeypatch.setattr(bench_update, "time_relabel_baseline", lambda device, rows: 0.25)
    monkeypatch.setattr(bench_update, "time_evaluation", lambda device, episodes: 2.0)
    monkeypatch.setattr(bench_update, "keep_freed_memory", lambda module: None)  # leave pytest's malloc alone
    args = bench_update.Args(algorithms=["bc"], sizes=["cpu"], precisions=["fp32"], repeats=1, warmup=0,
                             peak_matmul=64)
    with pytest.raises(SystemExit) as exit_info:
        bench_update.main(args)
    out, err = capsys.readouterr()
    assert exit_info.value.code == ("error: 1 part(s) of the benchmark failed (tracebacks above): "
                                    "relabeling pass on cpu")
    assert "error: relabeling pass on cpu failed: RuntimeError: boom" in err.splitlines()
    assert [line.startswith("## CPU") for line in out.splitlines() if line.startswith("## ")] == [True, True]
    assert sum(line.startswith("| bc | cpu | fp32 | ") for line in out.splitlines()) == 2
    assert out.count("evaluation round (") == 2 and out.count("relabeling pass over") == 1  # the second device's


@pytest.mark.parametrize("script,flags,message", [
    ("benchmarks/bench_update.py", ["--against", "no-such-revision"],
     "error: --against no-such-revision: not a commit of this repository"),
    # the --against timings would come first and take minutes: the path is checked before them
    ("benchmarks/bench_update.py", ["--against", "HEAD", "--corl-cql", "{tmp}/missing/cql.py"],
     "error: --corl-cql {tmp}/missing/cql.py: no such file"),
    ("benchmarks/bench_update.py", ["--corl-cql", "{tmp}"], "error: --corl-cql {tmp}: not a file"),
    ("benchmarks/bench_update.py", ["--corl-cql", "{tmp}/notes.py"], "error: --corl-cql {tmp}/notes.py: not a Python file"),
    ("benchmarks/bench_update.py", ["--corl-cql", "{tmp}/other.py"],
     "error: --corl-cql {tmp}/other.py: defines no TrainConfig, FullyConnectedQFunction, TanhGaussianPolicy, ContinuousCQL"),
    ("benchmarks/bench_update.py", ["--sizes", "huge"], "error: --sizes huge is not one of paper, 3x256, cpu, cpu-wide"),
    ("benchmarks/bench_collect.py", ["--against", "no-such-revision"],
     "error: --against no-such-revision: not a commit of this repository"),
])
def test_benchmark_inputs_are_checked_before_any_timing(script, flags, message, tmp_path):
    (tmp_path / "notes.py").write_text("these are notes, not Python (\n")
    (tmp_path / "other.py").write_text("x = 1\n")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    result = run_script(script, *flags, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert result.stdout == ""  # nothing timed, nothing printed
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message.format(tmp=tmp_path)), result.stderr


@pytest.mark.parametrize("script,flags,ready", [
    ("benchmarks/bench_update.py", ["--sizes", "cpu", "--algorithms", "bc", "--precisions", "fp32", "--repeats",
                                    "1000000", "--skip-extras", "--threads", "1", "--peak-matmul", "64"], "|---|"),
    ("benchmarks/bench_collect.py", ["--rounds", "1", "--learning-steps", "1"], "CPU: "),
])
def test_ctrl_c_ends_a_benchmark_with_one_line(script, flags, ready, tmp_path):
    """SIGINT once the benchmark is timing: one line, exit status 130, no traceback. A user's own interpreter,
    with SIGINT's default disposition (a shell starting this suite in the background would have it ignored)."""
    out_path = tmp_path / "stdout"
    with open(out_path, "w") as out:
        child = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *flags], cwd=tmp_path, stdout=out,
                                 stderr=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while ready not in out_path.read_text() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert child.poll() is None, child.stderr.read()  # still running: timing
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted; rows so far printed above"]
