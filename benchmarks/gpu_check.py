"""The GPU check of issue 38: one command that, on a machine with a GPU, measures what a paper-scale run costs there.

    python benchmarks/gpu_check.py --out DIR                                   # a GPU machine, ~7 minutes
    python benchmarks/gpu_check.py --out DIR --device cpu --sizes tiny         # the check itself, on a CPU (CI)

Sections, each isolated (one that fails records its error and the others still run; the exit status is then 1):

  machine     the GPU (name, compute capability, memory, CUDA, driver; the scripts' gpu_description), the CPU
              (cpu_description), torch, numpy and python, and which missing packages were stood in for
  peaks       the matmul peak in fp32, TF32 (CUDA) and bf16 (bench_update.matmul_peak)
  updates     each script's update at the size (paper: 3x1024, batch 1024), eager and one-graph (the scripts'
              --cuda-graph: CUDAGraphUpdate, CUDA only), fp32 (TF32 allowed on CUDA, as the scripts do) and bf16:
              ms per update, TFLOP/s from bench_update's FLOP count, % of the matmul peak of that precision
  evaluation  an evaluation round of mtcsac.py (both tasks) with its own evaluate(): where dm_control imports, real
              episodes, serial and with EvaluationWorkers; always, the policy side alone (the batched actor forward
              and the copy of its actions to the host at each of the 1000 steps, the environments stood in for)
  sync_check  a few steps of each script's loop body (a device randperm, the batch indexing, the update, the
              metrics kept on the device) under torch.cuda.set_sync_debug_mode("error"); on CPU the same steps run
              without it (the mode is CUDA's)
  training    mtcsac.py's own train() on the real data (data/walker_*_medium.npz) at the size, the device's default
              precision, stopped when its share of the budget is spent through the script's own preemption path
              (checkpoint, then Preempted): eager (the default) and, on CUDA, one-graph (--cuda-graph), half each
  projection  a whole run's time per path: its gradient steps at the measured seconds per step plus its
              evaluations (an evaluation round and a checkpoint save each)

It writes DIR/gpu_check.json (written again after every section, so that a run killed at a time limit leaves what
it had) and DIR/gpu_check.log (everything printed). The scripts import gymnasium and tyro at their top and
bench_update imports data/walker_data.py, which needs dm_control: where one of them is missing (the lent GPU
machine has none of them; benchmarks/README.md says which wheels to carry there) a stand-in module lets the
scripts load, the json says so, and nothing that needs the real module runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
import types
from dataclasses import replace

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "data"), os.path.join(ROOT, "benchmarks")]

ALGORITHMS = ("bc", "csac", "mtcsac", "hcsac")
PRECISIONS = ("fp32", "bf16")
PATHS = ("eager", "one-graph")
PRESETS = {  # per --sizes: the networks and batch, the peak's matmul n, and how much of everything to do
    "paper": {"network": {"hidden_dim": 1024, "num_layers": 3, "batch_size": 1024}, "peak_n": 8192, "repeats": 20,
              "warmup": 5, "sync_steps": 5, "eval_episodes": 10, "budget_seconds": 240.0},
    "tiny": {"network": {"hidden_dim": 32, "num_layers": 2, "batch_size": 64}, "peak_n": 128, "repeats": 3,
             "warmup": 1, "sync_steps": 3, "eval_episodes": 1, "budget_seconds": 3.0},
}
GOALS = {"update_ms": 3.0, "run_minutes": 10.0}  # issue 38's speed goals for the first GPU measurement (paper size)
JSON_NAME, LOG_NAME = "gpu_check.json", "gpu_check.log"


# ----------------------------------------------------------------------------------------------- imports
def stand_in(name: str, **attributes) -> types.ModuleType:
    """A module that lets `import name` succeed where the package is missing: it holds `attributes` and raises
    ModuleNotFoundError, naming the package, on anything else."""
    module = types.ModuleType(name, f"benchmarks/gpu_check.py's stand-in: {name} is not installed here")

    def missing(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise ModuleNotFoundError(f"{name} is not installed here ({name}.{attribute} was asked for; gpu_check "
                                  f"stood in for the module only so that the scripts could be imported)", name=name)

    module.__getattr__ = missing
    module.__dict__.update(attributes)
    return module


class StandInEnv:
    """gymnasium.Env's place where gymnasium is missing: the scripts subclass it (WalkerEnv), and make one only
    for an evaluation, after importing dm_control (missing there too)."""

    def reset(self, *, seed=None, options=None):
        return None


def import_or_stand_in(name: str, stood_in: dict[str, str], **attributes) -> None:
    try:
        importlib.import_module(name)
    except Exception as exc:  # missing, or a carried wheel that does not fit this machine: say which, go on
        sys.modules[name] = stand_in(name, **attributes)
        stood_in[name] = f"{exc.name} missing" if isinstance(exc, ModuleNotFoundError) else f"{type(exc).__name__}: {exc}"


def import_scripts() -> tuple[dict, types.ModuleType, dict[str, str]]:
    """The four scripts and bench_update, with stand-ins for what is missing here: gymnasium and tyro (imported at
    the scripts' top, used only to make an environment and to parse a command line) and walker_data (needs
    dm_control; bench_update takes only its Range and check_ranges, for its own command line)."""
    stood_in: dict[str, str] = {}
    import_or_stand_in("gymnasium", stood_in, Env=StandInEnv)
    import_or_stand_in("tyro", stood_in)
    modules = {name: importlib.import_module(name) for name in ALGORITHMS}
    try:
        importlib.import_module("walker_data")
    except Exception as exc:  # dm_control or MuJoCo missing, or MuJoCo failing to load
        def check_ranges(args):
            raise ModuleNotFoundError(f"walker_data could not be imported here ({reason})")
        reason = f"{exc.name} missing" if isinstance(exc, ModuleNotFoundError) else f"{type(exc).__name__}: {exc}"
        sys.modules["walker_data"] = stand_in("walker_data", Range=modules["csac"].Range, check_ranges=check_ranges)
        stood_in["walker_data"] = reason
    return modules, importlib.import_module("bench_update"), stood_in


def simulator_missing() -> str | None:
    """Why an evaluation cannot step real episodes here (None where dm_control and MuJoCo import)."""
    try:
        importlib.import_module("dm_control.suite")
    except Exception as exc:  # ImportError, or a MuJoCo that fails to load
        return f"{type(exc).__name__}: {exc}"
    return None


# ----------------------------------------------------------------------------------------------- the record
class Check:
    """What the run found: the json (rewritten after every section) and the errors by section."""

    def __init__(self, out: str, argv: list[str]):
        self.path = os.path.join(out, JSON_NAME)
        self.record = {"check": {"argv": argv, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "ok": None,
                                 "seconds": None}, "errors": {}}
        self.start = time.perf_counter()

    def error(self, name: str, exc: BaseException) -> None:
        traceback.print_exc()
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        self.record["errors"][name] = message
        print(f"error: {name} failed: {message}", file=sys.stderr, flush=True)

    def section(self, name: str, function, *arguments):
        """function(*arguments) as section `name`: its result recorded under the name, or its error in "errors"
        (the traceback printed) and None recorded; the json written either way."""
        print(f"\n== {name}", flush=True)
        start = time.perf_counter()
        try:
            result = function(*arguments)
        except Exception as exc:
            self.error(name, exc)
            result = None
        print(f"({name}: {time.perf_counter() - start:.1f} s)", flush=True)
        self.record[name] = result
        self.write()
        return result

    def write(self) -> None:
        self.record["check"]["seconds"] = round(time.perf_counter() - self.start, 1)
        self.record["check"]["ok"] = not self.record["errors"]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.record, f, indent=2)
        os.replace(tmp, self.path)


class Tee:
    """A stream that writes to the terminal and, until the check ends, to the log (a library that kept it, such
    as a logging handler, writes to the terminal alone afterwards)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        if not self.log.closed:
            self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        if not self.log.closed:
            self.log.flush()
        self.stream.flush()

    def isatty(self) -> bool:
        return False  # the scripts' progress then prints plain lines, not a tqdm bar

    def close(self) -> None:
        pass  # the terminal's stream is not ours to close

    def __getattr__(self, name: str):
        return getattr(self.stream, name)  # fileno, encoding, ...


@contextlib.contextmanager
def logged_to(path: str):
    with open(path, "w", buffering=1) as log:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(stdout, log), Tee(stderr, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = stdout, stderr


@contextlib.contextmanager
def torch_settings_kept():
    """The process-wide settings the check changes (TF32, deterministic algorithms), as they were afterwards."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def allow_tf32(device: torch.device, allowed: bool) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allowed  # as the scripts' train() sets it (resolve_precision)


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- sections
# Variables that change what the GPU computes underneath torch: a TF32 override would turn the "tf32" rows into
# fp32 (or the reverse) without a word; the cuBLAS workspace is what the scripts set for determinism.
ENVIRONMENT_RECORDED = ("NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG")


def machine(modules: dict, stood_in: dict[str, str], device: torch.device) -> dict:
    csac = modules["csac"]
    record = {"device": device.type, "gpu": csac.gpu_description(device), "cpu": csac.cpu_description(),
              "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
              "torch": torch.__version__, "torch_cuda": torch.version.cuda, "numpy": np.__version__,
              "packages": csac.package_versions(), "stood_in": stood_in, "simulator_missing": simulator_missing(),
              "environment": {name: os.environ.get(name) for name in ENVIRONMENT_RECORDED}}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        record["gpu"]["multiprocessors"] = properties.multi_processor_count
    gpu = record["gpu"]
    print(("GPU: {name}, compute capability {capability}, {memory_gib} GiB, {multiprocessors} SMs; CUDA {cuda}, "
           "driver {driver}".format(**gpu)) if gpu else "no GPU: CPU mode")
    print(f"CPU: {record['cpu']['model']} ({record['cpu']['capability']}), {record['cpu_count']} cores; "
          f"python {record['python']}, torch {record['torch']}, numpy {record['numpy']}")
    if stood_in:
        print("stood in for (missing here): " + ", ".join(f"{name} ({why})" for name, why in stood_in.items()))
    if record["simulator_missing"]:
        print(f"no simulator here ({record['simulator_missing']}): evaluations time their policy side only")
    return record


def peaks(bench_update, device: torch.device, n: int) -> dict:
    """Matmul peaks in TFLOP/s: fp32 (TF32 off), TF32 (CUDA only), bf16."""
    result = {}
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bf16", torch.bfloat16, False)):
        if name == "tf32" and device.type != "cuda":
            result[name] = None  # TF32 is CUDA's
            continue
        allow_tf32(device, tf32)
        result[name] = bench_update.matmul_peak(device, dtype, n) / 1e3
    release(device)
    print(f"matmul peak ({n}x{n}), TFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items() if v is not None))
    return result


class OneGraphUnavailable(Exception):
    """The one-graph update cannot be had here (the reason is the message); not a failure of the check."""


def one_graph_unavailable(module, device: torch.device) -> str | None:
    """Why the script's one-graph update cannot run here (None where it can)."""
    if not (hasattr(module, "CUDAGraphUpdate") and "cuda_graph" in module.Args.__dataclass_fields__):
        return "one-graph path not in this checkout (no --cuda-graph, no CUDAGraphUpdate)"
    if device.type != "cuda":
        return "CUDA graphs are CUDA's: not on CPU"
    return None


def script_args(module, network: dict, path: str, device: torch.device, **values):
    """The script's Args at `network` on `device` for `path`: eager (the default) or one-graph (its --cuda-graph,
    which makes the Learner's optimisers capturable); OneGraphUnavailable where that cannot run here."""
    if path == "one-graph":
        reason = one_graph_unavailable(module, device)
        if reason:
            raise OneGraphUnavailable(reason)
        values["cuda_graph"] = True
    return module.Args(**network, **values, cuda=device.type == "cuda")


def update_of(module, learner, path: str):
    """What the script's train() steps with: Learner.update, or with --cuda-graph on CUDA the update recorded
    once as one CUDA graph (CUDAGraphUpdate; recorded at its first call)."""
    return learner.update if path == "eager" else module.CUDAGraphUpdate(learner)


def update_row(modules: dict, bench_update, algorithm: str, precision: str, path: str, network: dict,
               device: torch.device, preset: dict, peak: dict | None) -> dict:
    module = modules[algorithm]
    row = {"algorithm": algorithm, "precision": precision, "path": path}
    try:
        arguments = script_args(module, network, path, device, bf16=precision == "bf16")
    except OneGraphUnavailable as exc:
        return {**row, "status": "not measured", "note": str(exc)}
    _, tf32, _ = module.resolve_precision(arguments, device, {"bf16"})  # TF32 on CUDA, as a run allows it
    allow_tf32(device, tf32)
    row["tf32"] = tf32
    learner = module.Learner(arguments, device)
    batch = bench_update.random_batch(module, arguments, device)
    update = update_of(module, learner, path)
    if path == "one-graph":  # its first call records the graph (warm-up updates, then the capture)
        bench_update.sync(device)
        start = time.perf_counter()
        update(*batch)
        bench_update.sync(device)
        row["record_s"] = time.perf_counter() - start
    seconds = bench_update.median_time(update, batch, device, preset["repeats"], preset["warmup"])
    gflop = bench_update.update_gflop(algorithm, arguments)
    peak_name = "bf16" if precision == "bf16" else "tf32" if tf32 else "fp32"
    reference = (peak or {}).get(peak_name)
    row.update(status="ok", ms=seconds * 1e3, gflop=gflop, tflops=gflop / seconds / 1e3, peak=peak_name,
               percent_of_peak=100 * gflop / seconds / 1e3 / reference if reference else None)
    if network == PRESETS["paper"]["network"]:
        row["meets_goal"] = row["ms"] <= GOALS["update_ms"]  # issue 38: a paper-size update in 3 ms or less
    del learner, update
    release(device)
    return row


def updates(check: Check, modules: dict, bench_update, network: dict, device: torch.device, preset: dict) -> list:
    """Every (algorithm, precision, path) row; a row that fails is recorded as failed and the others run."""
    rows = []
    print("| algorithm | precision | path | ms/update | GFLOP/update | TFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for algorithm in ALGORITHMS:
        for precision in PRECISIONS:
            for path in PATHS:
                name = f"updates/{algorithm} {precision} {path}"
                try:
                    row = update_row(modules, bench_update, algorithm, precision, path, network, device, preset,
                                     check.record.get("peaks"))
                except Exception as exc:
                    check.error(name, exc)
                    row = {"algorithm": algorithm, "precision": precision, "path": path, "status": "failed",
                           "note": check.record["errors"][name]}
                    release(device)
                rows.append(row)
                label = f"{precision}+tf32" if row.get("tf32") else precision
                if row["status"] == "ok":
                    percent = "–" if row["percent_of_peak"] is None else f"{row['percent_of_peak']:.0f}% of {row['peak']}"
                    print(f"| {algorithm} | {label} | {path} | {row['ms']:.2f} | {row['gflop']:.3g} | "
                          f"{row['tflops']:.3g} | {percent} |", flush=True)
                else:
                    print(f"| {algorithm} | {label} | {path} | {row['status']}: {row['note']} | | | |", flush=True)
    return rows


class PolicyOnlyEpisodes:
    """Stands in for the evaluation's environments (Episodes, EvaluationWorkers) where there is no simulator:
    evaluate() runs as in a run, one batched actor forward and one copy of the actions to the host per step, while
    these 'environments' return the same observations and no reward for `length` steps. MuJoCo is not measured."""

    def __init__(self, length: int):
        self.length = length

    def reset(self, task: str, seeds: list[int]) -> np.ndarray:
        self.steps = 0
        self.obs = np.random.default_rng(0).standard_normal((len(seeds), 24), dtype=np.float32)
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        self.steps += 1
        return self.obs, np.zeros(len(actions)), self.steps >= self.length

    def close(self) -> None:
        pass


def evaluation_round(module, actor, episodes: int, device: torch.device, workers) -> tuple[float, list]:
    """Seconds of one evaluation round (every task, as train() evaluates) and its returns."""
    release(device)
    start, returns = time.perf_counter(), []
    for task in module.TASKS:
        returns.append(module.evaluate(actor, task, episodes, 0, device, workers))
    return time.perf_counter() - start, returns


def evaluation(module, network: dict, device: torch.device, episodes: int) -> dict:
    """mtcsac.py's evaluation round with the paper-size (or --sizes) actor, in fp32 as a run evaluates (TF32 on
    CUDA): the policy side alone, and where the simulator imports, real episodes serial and with workers."""
    args = module.Args(**network, eval_episodes=episodes)
    allow_tf32(device, module.resolve_precision(args, device, set())[1])
    actor = module.Actor(args.hidden_dim, args.num_layers, args.task_embedding, args.init).to(device)
    evaluation_round(module, actor, episodes, device, PolicyOnlyEpisodes(2))  # warm-up
    policy_s, _ = evaluation_round(module, actor, episodes, device, PolicyOnlyEpisodes(module.EPISODE_LENGTH))
    record = {"tasks": list(module.TASKS), "episodes": episodes, "steps": module.EPISODE_LENGTH,
              "policy_only_round_s": policy_s}
    print(f"policy side of an evaluation round ({len(module.TASKS)} tasks x {module.EPISODE_LENGTH} batched actor "
          f"forwards of {episodes} observation(s), actions copied to the host): {policy_s:.2f} s")
    missing = simulator_missing()
    if missing:
        record["simulator"] = f"not measured: no simulator here ({missing})"
        print(f"MuJoCo stepping NOT measured: no simulator here ({missing})")
        return record
    serial_s, serial_returns = evaluation_round(module, actor, episodes, device, None)
    record.update(simulator="measured", serial_round_s=serial_s)
    print(f"evaluation round, {episodes} episodes per task, stepped in this process: {serial_s:.2f} s")
    workers = module.evaluation_workers(args, torch.device("cuda"))  # the count a CUDA run takes by default
    if workers is None:
        record["workers"] = "not measured: one core"
        return record
    try:
        first_s, _ = evaluation_round(module, actor, episodes, device, workers)  # includes the workers' start
        workers_s, workers_returns = evaluation_round(module, actor, episodes, device, workers)
    finally:
        workers.close()
    record.update(workers=len(workers.pipes), workers_first_round_s=first_s, workers_round_s=workers_s,
                  workers_same_returns=workers_returns == serial_returns)
    print(f"with {len(workers.pipes)} EvaluationWorkers: {workers_s:.2f} s ({first_s:.2f} s the first round, "
          f"their start included); returns {'bitwise equal to' if workers_returns == serial_returns else 'DIFFER from'} "
          f"serial")
    return record


def loop_steps(module, bench_update, arguments, device: torch.device, steps: int, path: str) -> dict:
    """`steps` steps of the script's training-loop body on a pool of random device rows: the epoch's device
    randperm, the batch indexing, the update (eager or one-graph), StepMetrics.observe; on CUDA under the sync
    trap. The first step (optimiser state made, a graph captured) runs before the trap."""
    batch_size, trap = arguments.batch_size, device.type == "cuda"
    rows = batch_size * (steps + 1)
    pool = bench_update.random_batch(module, replace(arguments, batch_size=rows), device)
    update = update_of(module, module.Learner(arguments, device), path)
    metrics_kept = module.StepMetrics(device)

    def step(permutation: torch.Tensor, number: int) -> None:
        idx = permutation[number * batch_size:(number + 1) * batch_size]
        metrics_kept.observe(update(*(column[idx] for column in pool)), number + 1)

    step(module.epoch_batch_order(rows, device, None)[0], 0)
    if trap:
        torch.cuda.synchronize()
    result = {}
    permutation = None
    for part in ("epoch_start", "steps"):  # epoch_start: the device randperm each epoch begins with
        try:
            with sync_trap(trap):
                if part == "epoch_start":
                    permutation = module.epoch_batch_order(rows, device, None)[0]
                else:
                    for number in range(1, steps + 1):
                        step(permutation, number)
            result[part] = "passed" if trap else "ran (no trap on CPU)"
        except RuntimeError as exc:
            result[part] = f"failed: {str(exc).strip().splitlines()[0]}"
            if permutation is None:
                permutation = module.epoch_batch_order(rows, device, None)[0]
    means = metrics_kept.pop_means()  # the log's host sync, after the trap
    if not all(math.isfinite(value) for value in means.values()):
        raise RuntimeError(f"non-finite metrics after {steps + 1} steps: {means}")
    return result


@contextlib.contextmanager
def sync_trap(on: bool):
    if not on:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def sync_check(check: Check, modules: dict, bench_update, network: dict, device: torch.device, steps: int) -> dict:
    trap = device.type == "cuda"
    record = {"trap": 'torch.cuda.set_sync_debug_mode("error")' if trap else
              "skipped: set_sync_debug_mode is CUDA's; the same steps ran on CPU without it", "steps": steps}
    print(record["trap"] if trap else f"sync trap {record['trap']}")
    for algorithm in ALGORITHMS:
        module = modules[algorithm]
        for path in PATHS:
            name = f"sync_check/{algorithm} {path}"
            try:
                arguments = script_args(module, network, path, device)
                arguments.bf16, tf32, _ = module.resolve_precision(arguments, device, set())  # a run's default
                allow_tf32(device, tf32)
                result = loop_steps(module, bench_update, arguments, device, steps, path)
                passed = all(value in ("passed", "ran (no trap on CPU)") for value in result.values())
                record[f"{algorithm} {path}"] = {"status": ("passed" if trap else "ran") if passed else "failed",
                                                 "bf16": arguments.bf16, **result}
                if not passed:
                    check.record["errors"][name] = "; ".join(f"{k}: {v}" for k, v in result.items() if v.startswith("failed"))
            except OneGraphUnavailable as exc:
                record[f"{algorithm} {path}"] = {"status": "not run", "note": str(exc)}
            except Exception as exc:
                check.error(name, exc)
                record[f"{algorithm} {path}"] = {"status": "failed", "note": check.record["errors"][name]}
            release(device)
            entry = record[f"{algorithm} {path}"]
            print(f"{algorithm} {path}: {entry['status']}" + (f" ({entry['note']})" if "note" in entry else "")
                  + "".join(f"; {k}: {v}" for k, v in entry.items() if k not in ("status", "note", "bf16")
                            and str(v).startswith("failed")), flush=True)
    return record


class StopAtDeadline:
    """Stands in for the script's Preemption (SIGTERM/SIGINT): asks train() to stop after the current step, with
    a checkpoint, once the budget is spent. Installs no signal handler."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    @property
    def requested(self) -> str | None:
        return "time budget spent" if time.perf_counter() >= self.deadline else None

    def release(self) -> None:
        pass


@contextlib.contextmanager
def patched(module, **attributes):
    saved = {name: getattr(module, name) for name in attributes}
    for name, value in attributes.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def training(check: Check, module, network: dict, device: torch.device, budget_seconds: float) -> dict:
    """mtcsac.py's train() on each update path it offers here (eager, the default; one-graph, its opt-in
    --cuda-graph), an equal share of the budget each; a path that fails is recorded and the other runs."""
    record, paths = {}, []
    for path in PATHS:
        try:
            script_args(module, network, path, device)
            record[path], paths = None, paths + [path]
        except OneGraphUnavailable as exc:
            record[path] = {"status": "not run", "note": str(exc)}
    for path in paths:
        try:
            record[path] = training_run(module, network, device, budget_seconds / len(paths), path)
        except Exception as exc:
            check.error(f"training/{path}", exc)
            record[path] = {"status": "failed", "note": check.record["errors"][f"training/{path}"]}
        release(device)
    return record


def training_run(module, network: dict, device: torch.device, budget_seconds: float, path: str) -> dict:
    """mtcsac.py's own train() on the real data, at `network` with every other setting the paper's (precision the
    device's default), stopped by the budget through the script's preemption path: its checkpoint holds the
    gradient steps made and the training seconds (evaluations and checkpoints not counted). Where there is no
    simulator, the run's evaluations (every 10 epochs) step PolicyOnlyEpisodes."""
    args = script_args(module, network, path, device, data_dir=os.path.join(ROOT, "data"), run_name=f"gpu_check_{path}")
    missing, started = simulator_missing(), []

    def evaluation_workers(args, device):  # the run's own, kept to be closed (a stopped run leaves them open)
        started.append(module_evaluation_workers(args, device))
        return started[-1]

    module_evaluation_workers = module.evaluation_workers
    patches = {"Preemption": lambda: StopAtDeadline(deadline), "evaluation_workers": evaluation_workers}
    if missing:
        patches["evaluation_workers"] = lambda args, device: PolicyOnlyEpisodes(module.EPISODE_LENGTH)
    locks = len(module.RUN_LOCKS)
    print(f"-- mtcsac.py train(), {path} update{' (--cuda-graph)' if path == 'one-graph' else ''}, "
          f"{budget_seconds:g} s", flush=True)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder), patched(module, **patches):
        start = time.perf_counter()
        deadline = start + budget_seconds  # the data loading and set-up count too: the budget is wall time
        try:
            results = module.train(args, None, set())  # set(): nothing typed, the device's default precision
        except module.Preempted as exc:
            print(f"stopped: {exc}")
            results = None
            for workers in started:
                if workers is not None:
                    workers.close()
        wall_s = time.perf_counter() - start
        checkpoint_path = os.path.join("runs", args.run_name, "checkpoint.pt")
        checkpoint = module.load_checkpoint(checkpoint_path)  # the budget's stop, or the whole run's last evaluation
        save_start = time.perf_counter()
        module.save_checkpoint(checkpoint_path, checkpoint)  # the cost of the checkpoint each evaluation writes
        save_s = time.perf_counter() - save_start
        checkpoint_mib = os.path.getsize(checkpoint_path) / 2**20
        for lock in module.RUN_LOCKS[locks:]:
            lock.close()
        del module.RUN_LOCKS[locks:]
    run_args, steps, train_s = checkpoint["args"], checkpoint["global_step"], checkpoint["train_seconds"]
    if results is None:
        steps_per_epoch = len(checkpoint["resume_at"]["permutation"]) // run_args["batch_size"]
    else:  # the whole run fitted in the budget (epochs of equal size)
        steps_per_epoch = steps // run_args["epochs"]
    evaluations = len(checkpoint["history"]["walk"])
    record = {"status": "ok", "algorithm": "mtcsac", "path": path, "dataset": run_args["dataset"], "network": network,
              "bf16": run_args["bf16"], "budget_s": budget_seconds, "completed": results is not None, "wall_s": wall_s,
              "steps": steps, "train_s": train_s, "ms_per_step": 1e3 * train_s / steps,
              "elapsed_s": checkpoint["elapsed"], "evaluations": evaluations, "steps_per_epoch": steps_per_epoch,
              "epochs": run_args["epochs"], "eval_every": run_args["eval_every"], "checkpoint_save_s": save_s,
              "checkpoint_mib": checkpoint_mib,
              "evaluations_stepped": "policy side only (no simulator)" if missing else "real episodes"}
    if evaluations:  # what each evaluation (and its checkpoint) cost inside the run
        record["in_run_evaluation_s_each"] = (checkpoint["elapsed"] - train_s) / evaluations
    print(f"mtcsac.py train(), {path}: {steps} gradient steps in {train_s:.1f} s of training "
          f"({record['ms_per_step']:.2f} ms per step, {'bf16' if record['bf16'] else 'fp32'}), {evaluations} "
          f"evaluations, {wall_s:.0f} s wall (data loading and set-up included); a checkpoint ({checkpoint_mib:.0f} "
          f"MiB) saves in {save_s:.2f} s")
    return record


def projection(module, record: dict) -> dict:
    """A whole run at the measured rates, per update path trained: its gradient steps (planned_steps, from the
    data's size) at the training's seconds per step, and its evaluations, each an evaluation round plus a
    checkpoint save."""
    trained = {path: run for path, run in (record.get("training") or {}).items() if run and run["status"] == "ok"}
    evaluation_record = record.get("evaluation") or {}
    round_s = next((evaluation_record[key] for key in ("workers_round_s", "serial_round_s", "policy_only_round_s")
                    if key in evaluation_record), None)
    if not trained or round_s is None:
        return {"status": "not computed: " + ("no training path" if not trained else "no evaluation round") +
                " has a result"}
    first = next(iter(trained.values()))
    args = module.Args(**first["network"], epochs=first["epochs"], eval_every=first["eval_every"])
    steps = module.planned_steps(args, 0, 1, first["steps_per_epoch"])
    evaluations = sum(1 for epoch in range(1, args.epochs + 1) if epoch % args.eval_every == 0 or epoch == args.epochs)
    evaluation_s = round_s + first["checkpoint_save_s"]
    simulator = evaluation_record.get("simulator") == "measured"
    paper = first["network"] == PRESETS["paper"]["network"]
    result = {"status": "projected", "steps": steps, "steps_per_epoch": first["steps_per_epoch"],
              "evaluations": evaluations, "evaluation_s_each": evaluation_s, "evaluations_s": evaluations * evaluation_s,
              "evaluation_from": ("workers round" if "workers_round_s" in evaluation_record else "serial round")
              if simulator else "policy side only: MuJoCo stepping NOT included (no simulator here)", "paths": {}}
    for path, run in trained.items():
        update_s = steps * run["ms_per_step"] / 1e3
        total_s = update_s + evaluations * evaluation_s
        result["paths"][path] = {"ms_per_step": run["ms_per_step"], "update_s": update_s, "total_s": total_s,
                                 "total_minutes": total_s / 60}
        if paper:  # issue 38's goal; where MuJoCo was not measured the total is a lower bound: no verdict
            result["paths"][path]["meets_goal"] = total_s / 60 <= GOALS["run_minutes"] if simulator else None
        print(f"projected whole run, {path}: {steps} steps x {run['ms_per_step']:.2f} ms = {update_s / 60:.1f} min of "
              f"updates + {evaluations} evaluations x {evaluation_s:.2f} s = {evaluations * evaluation_s / 60:.1f} min "
              f"({result['evaluation_from']}, a checkpoint save each): {total_s / 60:.1f} min")
    if paper:
        result["goal_run_minutes"] = GOALS["run_minutes"]
    # the same run at each mtcsac update row's ms (a single update timed alone: the loop's own cost left out)
    result["from_update_rows_minutes"] = {
        f"{row['precision']} {row['path']}": (steps * row["ms"] / 1e3 + evaluations * evaluation_s) / 60
        for row in record.get("updates") or [] if row["algorithm"] == "mtcsac" and row["status"] == "ok"}
    if result["from_update_rows_minutes"]:
        print("the same at the mtcsac update rows' ms (the loop's own cost left out): " + ", ".join(
            f"{name} {minutes:.1f} min" for name, minutes in result["from_update_rows_minutes"].items()))
    return result


# ----------------------------------------------------------------------------------------------- command line
class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.exit(f"error: {message}")  # one line (argparse's own adds the usage)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="gpu_check.py", description="What a paper-scale run costs on this machine's GPU (issue 38).")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.log (made if missing)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--sizes", choices=tuple(PRESETS), default=None,
                        help="paper (3x1024, batch 1024; default on cuda) or tiny (hidden 32: default on cpu, for CI)")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="wall seconds of the mtcsac training section (default: paper 240, tiny 3)")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help="episodes per task of the evaluation round (default: paper 10, tiny 1)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ("paper" if args.device == "cuda" else "tiny")
    preset = PRESETS[args.sizes]
    args.budget_seconds = preset["budget_seconds"] if args.budget_seconds is None else args.budget_seconds
    args.eval_episodes = preset["eval_episodes"] if args.eval_episodes is None else args.eval_episodes
    if not (math.isfinite(args.budget_seconds) and args.budget_seconds > 0):
        sys.exit(f"error: --budget-seconds {args.budget_seconds:g} is outside its range (0, inf)")
    if args.eval_episodes < 1:
        sys.exit(f"error: --eval-episodes {args.eval_episodes} is outside its range [1, inf)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device cuda: no CUDA device here (torch {torch.__version__}, CUDA "
                 f"{torch.version.cuda or 'not built in'}); --device cpu checks the check itself on a CPU")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        sys.exit(f"error: --out {args.out}: exists and is not a folder")
    try:
        os.makedirs(args.out, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):
            pass
    except OSError as exc:
        sys.exit(f"error: --out {args.out}: cannot write there ({exc.strerror or exc})")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    device, preset = torch.device(args.device), PRESETS[args.sizes]
    network = preset["network"]
    check = Check(args.out, argv)
    with logged_to(os.path.join(args.out, LOG_NAME)), torch_settings_kept():
        print(f"gpu_check: {args.device}, sizes {args.sizes} ({network}), training budget {args.budget_seconds:g} s; "
              f"writing {check.path}", flush=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as every run (use_deterministic_kernels)
        torch.use_deterministic_algorithms(True, warn_only=True)  # as every run (--torch-deterministic, default)
        try:
            modules, bench_update, stood_in = import_scripts()
        except Exception as exc:  # nothing below can run without the scripts
            check.error("imports", exc)
            check.write()
            sys.exit(f"error: the scripts could not be imported ({check.record['errors']['imports']})")
        check.record["check"].update(device=args.device, sizes=args.sizes, network=network,
                                     budget_seconds=args.budget_seconds, eval_episodes=args.eval_episodes,
                                     deterministic_algorithms=True)
        check.section("machine", machine, modules, stood_in, device)
        check.section("peaks", peaks, bench_update, device, preset["peak_n"])
        check.section("updates", updates, check, modules, bench_update, network, device, preset)
        check.section("evaluation", evaluation, modules["mtcsac"], network, device, args.eval_episodes)
        check.section("sync_check", sync_check, check, modules, bench_update, network, device, preset["sync_steps"])
        check.section("training", training, check, modules["mtcsac"], network, device, args.budget_seconds)
        check.section("projection", projection, modules["mtcsac"], check.record)
        check.write()
        errors = check.record["errors"]
        print(f"\ngpu_check: {'all sections done' if not errors else f'{len(errors)} error(s)'} in "
              f"{check.record['check']['seconds']:.0f} s; {check.path}", flush=True)
    if errors:
        sys.exit(f"error: {len(errors)} part(s) of the check failed: {'; '.join(errors)} (tracebacks in "
                 f"{os.path.join(args.out, LOG_NAME)})")


if __name__ == "__main__":
    from bench_cli import run_main

    run_main(main, sys.argv[1:])
