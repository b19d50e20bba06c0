"""What a GPU run does, proven on a CPU with torch.cuda monkeypatched: the precision it picks and says, the CUDA
RNG state a checkpoint keeps and a resume restores (on another number of GPUs, or on CPU), the GPU it records,
and hcsac's relabel scoring in full fp32 where TF32 is allowed."""

from __future__ import annotations

import json
import os
import random
import stat
import types

import numpy as np
import pytest
import torch
from conftest import TASK_FLAGS, TINY_FLAGS, checkpoint_networks, run_script

import bc
import csac
import hcsac
import mtcsac

MODULES = [bc, csac, mtcsac, hcsac]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def fake_gpu(monkeypatch, capability: tuple[int, int], devices: int = 1) -> None:
    """torch.cuda as on a machine with `devices` GPUs of this compute capability. is_bf16_supported answers as
    torch's does: True below 8.0 too unless emulation is excluded."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability >= (8, 0))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_precision_by_device_typed_flag_and_resume(module, monkeypatch):
    resolve = module.resolve_precision
    fake_gpu(monkeypatch, (9, 0))
    # untyped on a GPU with native bf16: bf16, and TF32 for what stays in fp32
    assert resolve(module.Args(), CUDA, set()) == (True, True, "bf16 (default on CUDA with compute capability 8.0+, "
                                                   "here 9.0; --no-bf16 for fp32); TF32 allowed in fp32 matmuls on CUDA")
    bf16, tf32, line = resolve(module.Args(bf16=False), CUDA, {"bf16"})  # --no-bf16 typed
    assert (bf16, tf32) == (False, True) and line.startswith("fp32 (--no-bf16 typed)")
    # --scale cpu on this GPU: apply_scale's choice (native bf16) and the CUDA default agree
    assert resolve(module.Args(scale="cpu", bf16=True), CUDA, {"scale"})[:2] == (True, True)
    # a resumed run keeps what it started with, whatever the device would pick
    bf16, tf32, line = resolve(module.Args(bf16=False), CUDA, set(), resumed=True)
    assert (bf16, tf32) == (False, True) and line.startswith("fp32 (as the run started")

    fake_gpu(monkeypatch, (7, 0))  # a V100: bf16 only emulated, which is_bf16_supported() alone would count
    assert module.native_bf16(CUDA) is False
    bf16, tf32, line = resolve(module.Args(), CUDA, set())
    assert (bf16, tf32) == (False, True)
    assert line.startswith("fp32 (default on CUDA below compute capability 8.0, here 7.0: no native bf16)")
    assert resolve(module.Args(bf16=True), CUDA, {"bf16"})[:2] == (True, True)  # --bf16 typed wins
    assert resolve(module.Args(bf16=True), CUDA, None)[0] is True  # from Python: set away from the default = typed

    # on CPU nothing changes: the paper scale's fp32, the cpu scale's choice, typed flags; never TF32
    assert resolve(module.Args(), CPU, set()) == (False, False, "fp32 (default on CPU; --bf16 for bf16 autocast)")
    assert resolve(module.Args(scale="cpu", bf16=True), CPU, {"scale"}) == (
        True, False, "bf16 (--scale cpu: native bf16 on this CPU)")
    assert resolve(module.Args(scale="cpu", bf16=False), CPU, {"scale"})[:2] == (False, False)
    assert resolve(module.Args(bf16=True), CPU, {"bf16"}) == (True, False, "bf16 (--bf16 typed)")
    bf16, tf32, line = resolve(module.Args(bf16=True), CPU, set(), resumed=True)  # a GPU's bf16 run resumed on CPU
    assert (bf16, tf32) == (True, False) and line.startswith("bf16 (as the run started")


def test_relabel_scoring_turns_tf32_off_and_restores_it(monkeypatch):
    torch.manual_seed(0)
    learner = hcsac.Learner(hcsac.Args(hidden_dim=16, num_layers=2), CPU)
    data = {"observations": torch.randn(50, 24), "actions": torch.rand(50, 6) * 2 - 1}
    seen = []
    forward = learner.critic.forward

    def recording_forward(*inputs):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return forward(*inputs)

    monkeypatch.setattr(learner.critic, "forward", recording_forward)
    allowed = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True  # as a CUDA run sets it (resolve_precision)
        hcsac.conservative_q_values(learner, data, batch_size=20)
        assert seen == [False] * 6  # 2 tasks x 3 chunks, each scored without TF32
        assert torch.backends.cuda.matmul.allow_tf32 is True  # the run's setting is back
        hcsac.conservative_q_values(learner, data, batch_size=50)  # the context is made afresh for every call
        assert seen[6:] == [False, False] and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_cuda_rng_state_of_the_runs_own_device_only_and_restored_on_any_gpu_count(module, monkeypatch):
    own, other = torch.arange(16, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8)
    fake_gpu(monkeypatch, (9, 0), devices=1)
    asked, restored = [], []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": asked.append(device) or own)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))

    def every_gpu(*_):  # what a checkpoint of two GPUs met on one before: IndexError in set_rng_state_all
        raise AssertionError("every GPU's RNG state touched")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_gpu)

    states = module.rng_states(CUDA)
    assert asked == [CUDA] and states["cuda"] is own
    expected = draws()
    # an older checkpoint, saved on a two-GPU machine with every GPU's state: resumed on a one-GPU machine, the
    # run's own (the first) is restored and the host generators as well
    module.set_rng_states({**states, "cuda": [own, other]}, CUDA)
    assert draws() == expected
    assert len(restored) == 1 and restored[0][0] is own and restored[0][1] == CUDA
    module.set_rng_states(states, CUDA)  # today's checkpoint: the one state
    assert len(restored) == 2 and restored[1][0] is own
    # on CPU: the CUDA state, in either form, is kept out of the way; a CPU run records none
    for cuda in (own, [own, other], [], None):
        module.set_rng_states({**states, "cuda": cuda}, CPU)
        assert draws() == expected
    assert len(restored) == 2 and module.rng_states(CPU)["cuda"] is None and asked == [CUDA]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_gpu_description_names_model_capability_memory_and_versions(module, monkeypatch, tmp_path):
    fake_gpu(monkeypatch, (9, 0))
    properties = types.SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=150_754_820_096)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '570.124.06\\n570.124.06\\n'\n")  # one line per GPU
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert module.gpu_description(CUDA) == {"name": "NVIDIA H200", "capability": "9.0", "memory_gib": 140.4,
                                            "cuda": "12.8", "driver": "570.124.06"}
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")  # a broken driver: unknown, no failure
    assert module.gpu_description(CUDA)["driver"] is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi at all
    assert module.gpu_description(CUDA)["driver"] is None
    assert module.gpu_description(CPU) is None


def test_a_checkpoint_from_a_two_gpu_machine_resumes_on_cpu_to_the_same_weights(tiny_data_dir, tmp_path):
    """The resume a GPU run meets on a CPU: its checkpoint has CUDA RNG states (here two GPUs', as checkpoints
    kept them before) and a GPU record; the run continues to the weights of an uninterrupted one, states its
    precision, and records each process's GPU (None on CPU; None for processes from before `gpus` was kept)."""
    flags = ["--data-dir", tiny_data_dir, *TASK_FLAGS["csac.py"], *TINY_FLAGS]
    result = run_script("csac.py", *flags, "--run-name", "whole", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "precision: fp32 (default on CPU; --bf16 for bf16 autocast)\n" in result.stdout
    result = run_script("csac.py", *flags, "--epochs", "1", "--run-name", "part", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    path = tmp_path / "runs" / "part" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["gpus"] == [None] and checkpoint["rng"]["cuda"] is None  # a CPU process
    h200 = {"name": "NVIDIA H200", "capability": "9.0", "memory_gib": 140.4, "cuda": "12.8", "driver": "570.124.06"}
    checkpoint["gpus"] = [h200]
    checkpoint["rng"]["cuda"] = [torch.arange(16, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8)]
    torch.save(checkpoint, path)
    result = run_script("csac.py", "--resume", "runs/part", "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "precision: fp32 (as the run started; it may not change on resume)\n" in result.stdout
    torch.testing.assert_close(checkpoint_networks(tmp_path / "runs" / "part"),
                               checkpoint_networks(tmp_path / "runs" / "whole"), rtol=0, atol=1e-5)
    resumed = torch.load(path, weights_only=False)
    assert resumed["gpus"] == [h200, None] and resumed["rng"]["cuda"] is None

    with open(tmp_path / "runs" / "part" / "results.json") as f:
        results = json.load(f)
    assert results["gpus"] == [h200, None] and results["tf32"] is False and results["precision"] == "fp32"
    assert len(results["cpus"]) == len(results["code"]) == 2

    del resumed["gpus"]  # a checkpoint from before `gpus` was kept: its processes' GPUs are unknown, not guessed
    torch.save(resumed, path)
    result = run_script("csac.py", "--resume", "runs/part", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "runs" / "part" / "results.json") as f:
        results = json.load(f)
    assert results["gpus"] == [None, None, None] and len(results["code"]) == 3


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_deterministic_kernels_fix_the_cublas_workspace_unless_the_user_chose_one(module, monkeypatch):
    """cuBLAS is deterministic only with a fixed workspace, and reads it at its first call: --torch-deterministic
    sets it before any CUDA work; a value already in the environment wins; off, nothing is set."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
        module.use_deterministic_kernels(False)
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and not torch.are_deterministic_algorithms_enabled()
        module.use_deterministic_kernels(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        module.use_deterministic_kernels(True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
