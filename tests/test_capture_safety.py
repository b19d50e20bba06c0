"""What a CUDA graph of the update needs, proven on a CPU: every script's Learner.update (and the per-step work
around it, and hcsac's relabel scoring) runs on the plain Critic (the class CUDA uses) without a host sync or a
data-dependent shape, under a trap that raises on them; its operations and shapes do not depend on the batch's
values; with --cuda-graph the optimisers are capturable, and a checkpoint moves between the graph and the eager
path; the graph's warm-up leaves no trace (snapshot_learner / restore_learner); and CUDAGraphUpdate's bookkeeping,
its CUDA calls stood in for, trains to the eager update's numbers. What CUDA itself does under capture needs a GPU."""

from __future__ import annotations

import contextlib
import importlib
import io

import pytest
import torch
import torch.utils._pytree as pytree
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import TASK_FLAGS, TINY_FLAGS, checkpoint_networks, run_script

import bc
import csac
import hcsac
import mtcsac

MODULES = [bc, csac, mtcsac, hcsac]
CPU, META = torch.device("cpu"), torch.device("meta")
aten = torch.ops.aten
# the batch each script's training loop hands to update(), in its order
BATCH_KEYS = {bc: ("observations", "actions", "rewards", "next_observations"),
              csac: ("observations", "actions", "rewards", "next_observations"),
              mtcsac: ("observations", "task_ids", "actions", "rewards", "next_observations"),
              hcsac: ("observations", "task_ids", "actions", "rewards", "next_observations")}
TINY = {"hidden_dim": 16, "num_layers": 2, "batch_size": 8}


def tiny_args(module, **flags):
    return module.Args(**TINY, **({} if module is bc else {"num_sampled_actions": 3}), **flags)


class HostSync(AssertionError):
    """What a CUDA graph cannot capture: a host sync, a shape that depends on values, a tensor on another device."""


# Tensor methods and functions that read a value on the host (a device sync) or whose output shape depends on the
# values (nonzero and its kin sync to size their output). Caught where Python calls them, and again below at
# the aten level, where every host read is aten._local_scalar_dense.
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
              torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu}
DATA_DEPENDENT = {torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere, torch.unique,
                  torch.Tensor.unique, torch.unique_consecutive, torch.Tensor.unique_consecutive, torch.masked_select,
                  torch.Tensor.masked_select}
ATEN_FORBIDDEN = {aten._local_scalar_dense, aten.nonzero, aten.argwhere, aten.masked_select, aten._unique,
                  aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.unique_dim_consecutive}
INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_, torch.Tensor.index_put}


def tensors_in(tree) -> list[torch.Tensor]:
    return [leaf for leaf in pytree.tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


class PythonLevelTrap(TorchFunctionMode):
    """Host reads and data-dependent shapes where Python asks for them: .item(), .tolist(), bool(t), int(t),
    .cpu(), .numpy(), nonzero, unique, masked_select, boolean-mask indexing, and index tensors (or .to()
    targets) on another device than `device`."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__qualname__", str(func))
        if func in HOST_READS:
            raise HostSync(f"{name}: a host read (device sync)")
        if func in DATA_DEPENDENT or (func in (torch.where, torch.Tensor.where) and len(args) + len(kwargs) == 1):
            raise HostSync(f"{name}: an output shape that depends on the values")
        if func in INDEXING:
            for index in tensors_in(args[1:2]):
                if index.dtype == torch.bool:
                    raise HostSync(f"{name} with a boolean mask: an output shape that depends on the values")
                if index.device != self.device:
                    raise HostSync(f"{name} with an index tensor on {index.device}, not {self.device}")
        if func in (torch.Tensor.to, torch.Tensor.type):
            targets = [value for value in (*args[1:], *kwargs.values()) if isinstance(value, (str, torch.device))]
            for target in targets:
                try:
                    device = torch.device(target)
                except (RuntimeError, TypeError):
                    continue  # a dtype name
                if device.type != self.device.type:
                    raise HostSync(f"{name} to {device}: a copy between devices")
        return func(*args, **kwargs)


class AtenLevelTrap(TorchDispatchMode):
    """The same at the aten level, where Python's calls arrive as operators (what the libraries call too): every
    host read, the ops whose output shape depends on values, boolean-mask indexing, and any tensor of an operator,
    input or output, on another device than `device` (a factory call without device=, a 0-dim CPU tensor whose
    value a CUDA graph would bake in). Records each operator with its outputs' shapes in `log`."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device, self.log = device, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in ATEN_FORBIDDEN:
            raise HostSync(f"{func}: a host read or an output shape that depends on the values")
        if func.overloadpacket in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_):
            if any(index.dtype == torch.bool for index in tensors_in(args[1:2])):
                raise HostSync(f"{func} with a boolean mask: an output shape that depends on the values")
        for tensor in tensors_in((args, kwargs)):
            if tensor.device != self.device:
                raise HostSync(f"{func} on a tensor on {tensor.device}, not {self.device}: "
                               f"shape {tuple(tensor.shape)}")
        out = func(*args, **kwargs)
        outputs = tensors_in(out)
        for tensor in outputs:
            if tensor.device != self.device:
                raise HostSync(f"{func} made a tensor on {tensor.device}, not {self.device}")
        self.log.append((str(func), [(tuple(t.shape), t.dtype) for t in outputs]))
        return out


@contextlib.contextmanager
def sync_trap(device: torch.device):
    """Both traps; yields the aten trap, whose log lists the operators run within."""
    aten_trap = AtenLevelTrap(device)
    with PythonLevelTrap(device), aten_trap:
        yield aten_trap


def plain_critic(module, monkeypatch) -> None:
    """The Critic class CUDA uses, on CPU too (Learner picks CPUFusedCritic there; bc has no critic)."""
    if module is not bc:
        monkeypatch.setattr(module, "CPUFusedCritic", module.Critic)


def on_meta(module, monkeypatch) -> None:
    """What meta tensors lack and a CUDA run has: fused Adam (torch admits only real devices) and autocast (no meta
    autocast; the bf16 path is trapped on CPU below)."""
    monkeypatch.setattr(importlib.import_module("torch.optim.adam"), "_device_dtype_check_for_fused",
                        lambda *args, **kwargs: None)
    monkeypatch.setattr(module.Learner, "autocast", lambda self: contextlib.nullcontext())


def dataset(module, size: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """A dataset in the layout train() keeps on the device (random values; meta: none)."""
    generator = torch.Generator().manual_seed(seed)
    rows = {"observations": torch.randn(size, module.OBS_DIM, generator=generator),
            "task_ids": torch.randint(0, 2, (size,), generator=generator),
            "actions": torch.rand(size, module.ACT_DIM, generator=generator) * 2 - 1,
            "rewards": torch.rand(size, generator=generator),
            "next_observations": torch.randn(size, module.OBS_DIM, generator=generator)}
    return {key: value.to(device) for key, value in rows.items()}


def training_steps(module, learner, data: dict, steps: int, device: torch.device, logs: list | None = None):
    """What train()'s loop does per step on the device: a batch of a fresh permutation, the update, the metrics
    accumulated without a sync. With `logs`, each step under its own trap, its operator log appended."""
    metrics = module.StepMetrics(device)
    batch_size = learner.args.batch_size
    for step in range(steps):
        with sync_trap(device) as trap:
            permutation, _ = module.epoch_batch_order(len(data["observations"]), device, None)
            idx = permutation[:batch_size]
            metrics.observe(learner.update(*(data[key][idx] for key in BATCH_KEYS[module])), step + 1)
        if logs is not None:
            logs.append(trap.log)
    return metrics


# ----------------------------------------------------------------------------------------------- the trap works
def syncs_once(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if x.sum().item() > 0 else x  # a Python branch on a value: the host waits for the device


CULPRITS = {
    "item": syncs_once,
    "bool": lambda x: x if bool(x.sum() > 0) else -x,
    "float": lambda x: float(x.sum()),
    "tolist": lambda x: x.tolist(),
    "cpu": lambda x: x.cpu(),
    "numpy": lambda x: x.numpy(),
    "mask": lambda x: x[x > 0],
    "nonzero": lambda x: torch.nonzero(x),
    "where": lambda x: torch.where(x > 0),
    "unique": lambda x: torch.unique(x),
    "masked_select": lambda x: torch.masked_select(x, x > 0),
}


@pytest.mark.parametrize("device", [CPU, META], ids=str)
@pytest.mark.parametrize("culprit", CULPRITS.values(), ids=CULPRITS.keys())
def test_the_trap_raises_on_host_syncs_and_data_dependent_shapes(culprit, device):
    x = torch.randn(4, device=device)
    with pytest.raises(HostSync), sync_trap(device):
        culprit(x)


@pytest.mark.parametrize("culprit", [
    lambda x: x[torch.arange(2)],  # an index tensor on the CPU
    lambda x: x + torch.ones(()),  # a factory call without device=: a CPU tensor, whose value a graph would bake in
    lambda x: x.to("cpu"),
], ids=["index", "factory", "to"])
def test_the_trap_raises_on_tensors_of_another_device(culprit):
    x = torch.randn(4, device=META)  # a meta run stands for a CUDA one: every CPU tensor is foreign
    with pytest.raises(HostSync), sync_trap(META):
        culprit(x)


def test_the_trap_lets_device_side_work_through():
    x = torch.randn(4, 3)
    with sync_trap(CPU) as trap:
        y = torch.where(x > 0, x, torch.zeros((), device=CPU)).sum(0) + x[torch.arange(2)].mean()
        x[:, 0].clamp_(min=0)
    assert y.shape == (3,) and trap.log


# ----------------------------------------------------------------------------------------------- the update
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["eager", "cuda-graph"])
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_training_steps_at_paper_size_make_no_host_sync_on_meta(module, cuda_graph, monkeypatch):
    """The paper's sizes, on meta tensors (nothing computes): the learner (on the plain Critic: it is not on CPU) and
    its data on the device stand-in, the default device left CPU, so that a factory call without device= makes a
    CPU tensor the trap sees. Two steps: the first makes the optimisers' state, the second runs with it."""
    on_meta(module, monkeypatch)
    args = module.Args(cuda_graph=cuda_graph)
    learner = module.Learner(args, META)
    if module is not bc:
        assert type(learner.critic) is module.Critic
    logs = []
    training_steps(module, learner, dataset(module, 2 * args.batch_size, META, seed=0), 2, META, logs)
    assert any("_fused_adam" in name for name, _ in logs[1])  # the optimiser steps are in what was trapped


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_update_on_cpu_makes_no_host_sync_and_runs_the_same_operations_whatever_the_batch(module, bf16, monkeypatch):
    """Real values on CPU with the plain Critic, bf16 autocast included: no host sync, and the same operators with
    the same output shapes and dtypes at every step for different batches, the metrics included (a CUDA graph
    replays one recorded sequence: no data-dependent shape, no Python branch on a value). The first step differs
    (it makes the optimisers' state; a graph's warm-up runs it before the capture)."""
    plain_critic(module, monkeypatch)
    torch.manual_seed(0)
    learner = module.Learner(tiny_args(module, bf16=bf16), CPU)
    if module is not bc:
        assert type(learner.critic) is module.Critic
    logs = []
    training_steps(module, learner, dataset(module, 64, CPU, seed=1), 3, CPU, logs)
    assert logs[1] == logs[2] and logs[0] != logs[1]
    assert any("_fused_adam" in name for name, _ in logs[1])  # the optimiser steps are in what was trapped


@pytest.mark.parametrize("device", [CPU, META], ids=str)
def test_hcsac_relabel_scoring_makes_no_host_sync(device, monkeypatch):
    """hcsac's scoring pass (conservative_q_values: every task's conservative Q on all the data, in chunks, the last
    one shorter) on the plain Critic. What follows it, the thresholds and D*'s rows (thresholds_and_shared,
    build_d_star), may sync: nonzero sizes D*; it runs once per relabeling, not per step, and outside the graph."""
    plain_critic(hcsac, monkeypatch)
    learner = hcsac.Learner(tiny_args(hcsac), device)
    data = dataset(hcsac, 50, device, seed=2)
    with sync_trap(device):
        q_values = hcsac.conservative_q_values(learner, data, batch_size=16)
    assert q_values.shape == (len(hcsac.TASKS), 50)


@pytest.mark.parametrize("device", [CPU, META], ids=str)
def test_the_trap_catches_a_sync_inside_the_update(device, monkeypatch):
    """A host read deep inside the update (here in the actor's forward) is caught, on CPU and on meta."""
    module = hcsac
    plain_critic(module, monkeypatch)
    if device == META:
        on_meta(module, monkeypatch)
    learner = module.Learner(tiny_args(module), device)
    forward = learner.actor.forward

    def syncing_forward(obs, task_ids):
        mean, log_std = forward(obs, task_ids)
        return (mean if mean.abs().max() < 10 else mean.clamp(-10, 10)), log_std  # bool(tensor): a sync

    monkeypatch.setattr(learner.actor, "forward", syncing_forward)
    with pytest.raises(HostSync, match="__bool__"):
        training_steps(module, learner, dataset(module, 64, device, seed=5), 1, device)


# ----------------------------------------------------------------------------------------------- --cuda-graph
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_cuda_graph_makes_the_optimisers_capturable_where_it_applies(module):
    """Capturable optimisers with --cuda-graph off the CPU (meta stands for CUDA); on CPU and without the flag
    today's: not capturable, autocast's weight cache on; CUDAGraphUpdate refuses a learner made otherwise."""
    def flags(learner):
        return {group["capturable"] for optimizer in module.optimizers(learner) for group in optimizer.param_groups}

    assert flags(module.Learner(tiny_args(module, cuda_graph=True), META)) == {True}
    assert flags(module.Learner(tiny_args(module), META)) == {False}
    assert flags(module.Learner(tiny_args(module, cuda_graph=True), CPU)) == {False}  # the CPU runs eagerly
    eager = module.Learner(tiny_args(module), CPU)
    assert flags(eager) == {False} and eager.autocast()._cache_enabled is True
    with pytest.raises(ValueError, match="--cuda-graph"):
        module.CUDAGraphUpdate(eager)


def saved_and_loaded(state: dict) -> dict:
    """Through a file, as a checkpoint goes (a state_dict shares its tensors with the learner)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_a_graph_runs_checkpoint_resumes_eagerly_and_back_to_the_same_numbers(module):
    """Fused Adam keeps `step` on the device with or without capturable, so the checkpoints of the two paths are
    alike: a capturable learner's state (here on CPU, where the flag changes no number) loads into an eager one and
    back, each keeping its own flag, and both continue to the same numbers."""
    args = tiny_args(module)
    data = dataset(module, 64, CPU, seed=3)
    batches = [tuple(data[key][8 * i:8 * (i + 1)] for key in BATCH_KEYS[module]) for i in range(3)]
    torch.manual_seed(0)
    graph_run = module.Learner(args, CPU)
    graph_run.capturable = True  # as on CUDA with --cuda-graph
    for optimizer in module.optimizers(graph_run):
        optimizer.param_groups[0]["capturable"] = True
    graph_run.update(*batches[0])
    eager_run = module.Learner(args, CPU)
    eager_run.load_state_dict(saved_and_loaded(graph_run.state_dict()))
    back = module.Learner(args, CPU)
    back.capturable = True
    back.load_state_dict(saved_and_loaded(eager_run.state_dict()))
    assert {group["capturable"] for o in module.optimizers(eager_run) for group in o.param_groups} == {False}
    assert {group["capturable"] for o in module.optimizers(back) for group in o.param_groups} == {True}
    steps = module.optimizers(eager_run)[0].state_dict()["state"][0]["step"]
    assert steps.device == CPU and steps.dtype == torch.float32 and steps.item() == 1
    states = torch.get_rng_state()
    results = []
    for learner in (graph_run, eager_run, back):
        torch.set_rng_state(states)
        metrics = learner.update(*batches[1])
        state = learner.state_dict()  # the optimisers' param_groups differ in their capturable flag only
        results.append((metrics, {key: value["state"] if key.endswith("optimizer") else value
                                  for key, value in state.items()}))
    for metrics, state in results[1:]:
        torch.testing.assert_close(metrics, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(state, results[0][1], rtol=0, atol=0)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_the_warmup_before_a_capture_leaves_no_trace(module):
    """CUDAGraphUpdate's warm-up, on CPU: after a few updates, restore_learner puts every tensor back bitwise (in
    place), the optimiser state the first update made reset to Adam's zeros at step 0, and the device's generator;
    the run then computes what it would have without the warm-up."""
    args = tiny_args(module)
    data = dataset(module, 64, CPU, seed=4)
    batches = [tuple(data[key][8 * i:8 * (i + 1)] for key in BATCH_KEYS[module]) for i in range(4)]

    def tensors(learner) -> dict:
        found = {"rng": torch.get_rng_state()}
        for name, value in vars(learner).items():
            if isinstance(value, torch.nn.Module):
                found.update({f"{name}.{key}": tensor for key, tensor in value.state_dict().items()})
            elif isinstance(value, torch.Tensor):
                found[name] = value
        for number, optimizer in enumerate(module.optimizers(learner)):
            for index, state in optimizer.state_dict()["state"].items():
                found.update({f"optimizer{number}.{index}.{key}": tensor for key, tensor in state.items()})
        return {key: tensor.detach().clone() for key, tensor in found.items()}

    torch.manual_seed(0)
    learner = module.Learner(args, CPU)
    saved, before = module.snapshot_learner(learner), tensors(learner)
    addresses = [p.data_ptr() for p in learner.actor.parameters()]
    for batch in batches[:3]:  # the warm-up; the first makes the optimisers' state
        learner.update(*batch)
    assert any(state for optimizer in module.optimizers(learner) for state in optimizer.state.values())
    module.restore_learner(learner, saved)
    after = tensors(learner)
    assert [p.data_ptr() for p in learner.actor.parameters()] == addresses
    made = {key: tensor for key, tensor in after.items() if key.startswith("optimizer")}
    assert made and all(torch.equal(tensor, torch.zeros_like(tensor)) for tensor in made.values())
    torch.testing.assert_close({key: after[key] for key in before}, before, rtol=0, atol=0)

    # restored mid-run too (existing optimiser state put back), then on to what a run without the warm-up computes
    learner.update(*batches[3])
    saved = module.snapshot_learner(learner)
    reference = tensors(learner)
    learner.update(*batches[0])
    module.restore_learner(learner, saved)
    torch.testing.assert_close(tensors(learner), reference, rtol=0, atol=0)
    torch.manual_seed(0)
    unwarmed = module.Learner(args, CPU)
    unwarmed.update(*batches[3])
    torch.testing.assert_close(tensors(unwarmed), reference, rtol=0, atol=0)


def test_cuda_graph_on_cpu_says_so_and_trains_eagerly(tiny_data_dir, tmp_path):
    """--cuda-graph on a CPU (a GPU run resumed on a CPU has it too): one line, then today's eager run, to the same
    numbers as without the flag; with --compile, refused in one line (both record CUDA graphs)."""
    flags = ["--data-dir", tiny_data_dir, *TASK_FLAGS["bc.py"], *TINY_FLAGS, "--epochs", "1"]
    graph = run_script("bc.py", *flags, "--cuda-graph", "--run-name", "graph", cwd=tmp_path)
    assert graph.returncode == 0 and graph.stderr == "", graph.stderr
    assert "--cuda-graph applies only on CUDA: the update runs eagerly here\n" in graph.stdout
    eager = run_script("bc.py", *flags, "--run-name", "eager", cwd=tmp_path)
    assert eager.returncode == 0, eager.stderr
    torch.testing.assert_close(checkpoint_networks(tmp_path / "runs" / "graph"),
                               checkpoint_networks(tmp_path / "runs" / "eager"), rtol=0, atol=0)
    both = run_script("bc.py", *flags, "--cuda-graph", "--compile", "--run-name", "both", cwd=tmp_path)
    assert both.returncode == 1
    assert both.stderr == "error: --cuda-graph and --compile both record CUDA graphs of the update; choose one\n"


class RecordedCall:
    """A CPU stand-in for torch.cuda.CUDAGraph: what is "captured" is the Python call made under torch.cuda.graph,
    and a replay calls it again, writing its results into the tensors the capture returned (the static outputs)."""
    recording = None

    def __init__(self):
        self.call, self.outputs = None, None

    def replay(self) -> None:
        for static, value in zip(self.outputs.values(), self.call().values(), strict=True):
            static.copy_(value)


class NoStream(contextlib.nullcontext):
    """A CPU stand-in for torch.cuda's streams (CPU work runs in order)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def wait_stream(self, other) -> None:
        pass


@contextlib.contextmanager
def recording(graph: RecordedCall):
    RecordedCall.recording = graph
    try:
        yield
    finally:
        RecordedCall.recording = None


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_cuda_graph_update_trains_as_the_eager_update(module, monkeypatch):
    """CUDAGraphUpdate's bookkeeping on CPU, its CUDA calls replaced by RecordedCall: the warm-up and capture at the
    first step undone, each batch copied into the static inputs, the static outputs consumed before the next replay,
    a learner resumed from a checkpoint before the first step. The same numbers as the eager update, bitwise. (What
    CUDA does under capture is for a GPU.) The steps after the first (the capture) run under the sync trap."""
    for name in ("Stream", "stream", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, NoStream)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", RecordedCall)
    monkeypatch.setattr(torch.cuda, "graph", recording)
    args = tiny_args(module)
    data = dataset(module, 64, CPU, seed=6)
    batches = [tuple(data[key][8 * i:8 * (i + 1)] for key in BATCH_KEYS[module]) for i in range(8)]

    def graphed(learner):
        learner.capturable = True  # as --cuda-graph makes it on CUDA
        for optimizer in module.optimizers(learner):
            optimizer.param_groups[0]["capturable"] = True
        update = learner.update

        def recorded_update(*inputs):
            outputs = update(*inputs)
            if RecordedCall.recording is not None:
                RecordedCall.recording.call, RecordedCall.recording.outputs = (lambda: update(*inputs)), outputs
            return outputs

        learner.update = recorded_update
        return module.CUDAGraphUpdate(learner)

    results = []
    for path in ("eager", "graph", "resumed graph"):
        torch.manual_seed(0)
        learner = module.Learner(args, CPU)
        first = 0
        if path == "resumed graph":  # 3 eager steps, a checkpoint, then a fresh learner loads it
            for batch in batches[:3]:
                learner.update(*batch)
            state, rng = saved_and_loaded(learner.state_dict()), torch.get_rng_state()
            learner = module.Learner(args, CPU)
            learner.load_state_dict(state)
            torch.set_rng_state(rng)
            first = 3
        update = learner.update if path == "eager" else graphed(learner)
        metrics = module.StepMetrics(CPU)
        for step, batch in enumerate(batches[first:], first + 1):
            with sync_trap(CPU) if step > first + 1 else contextlib.nullcontext():
                metrics.observe(update(*batch), step)
        results.append((learner.state_dict(), metrics.sums))  # sums: every step's metrics (the resumed: from 4)

    def networks_and_optimiser_states(state: dict) -> dict:  # param_groups differ in their capturable flag only
        return {key: value["state"] if key.endswith("optimizer") else value for key, value in state.items()}

    for state, _ in results[1:]:
        torch.testing.assert_close(networks_and_optimiser_states(state), networks_and_optimiser_states(results[0][0]),
                                   rtol=0, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0, atol=0)
