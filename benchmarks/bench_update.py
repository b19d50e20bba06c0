"""Time the four scripts' own update functions, one relabeling pass and one evaluation round.

Imports bc.py, csac.py, mtcsac.py and hcsac.py (no copies of their code) and prints, per algorithm, size
and precision: ms per update (median after warm-up), updates/s, GFLOP per update counted from the layer
shapes, achieved GFLOP/s and its fraction of the matmul peak measured in the same run.

    python benchmarks/bench_update.py                 # every size, fp32 and bf16
    python benchmarks/bench_update.py --sizes cpu --precisions bf16 --threads 1 --against 5bd7846
    python benchmarks/bench_update.py --sizes 3x256 --corl-cql path/to/CORL/algorithms/offline/cql.py
    python benchmarks/bench_update.py --sizes cpu --precisions bf16 --threads 1 --compile --skip-extras

--against REV times csac.py as it was at git revision REV beside today's, each in a fresh process, so that a
speed-up is a ratio measured in one run. --corl-cql times CORL's ContinuousCQL.train (imported unmodified,
its unused imports stubbed) beside our update at the same size. --compile adds, per row, the same update under
torch.compile against eager, and how long the compile took. The time-to-learn line reads the committed
csac walk-medium runs of the cpu scale (results/cpu/runs/).

Every input (sizes, --against's revision, --corl-cql's file) is checked before any timing: a fault is one line and
a non-zero exit. Ctrl-C ends a run with one line (exit status 130); the rows printed so far stand. A section that
fails (a row, the relabeling pass, the evaluation round) prints its error and the run goes on, so that on a GPU
machine the CUDA rows come whatever failed before them; the exit status is then 1.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bc  # noqa: E402
import csac  # noqa: E402
import hcsac  # noqa: E402
import mtcsac  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from walker_data import Range, check_ranges  # noqa: E402  (the flag ranges of the data tools, shared)
from bench_cli import check_choices, check_revision, run_main  # noqa: E402

MODULES = {"bc": bc, "csac": csac, "mtcsac": mtcsac, "hcsac": hcsac}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"paper": {"hidden_dim": 1024, "num_layers": 3, "batch_size": 1024},
         "3x256": {"hidden_dim": 256, "num_layers": 3, "batch_size": 256},  # CORL's cql.py size
         "cpu": dict(csac.CPU_SCALE),  # the scripts' --scale cpu
         "cpu-wide": {"hidden_dim": 1024, "num_layers": 3, "batch_size": 256}}  # reproduce.py's cpu-wide scale
CORL_WIDTH = 256  # the width of CORL's cql.py networks, fixed there
CORL_NAMES = ("TrainConfig", "FullyConnectedQFunction", "TanhGaussianPolicy", "ContinuousCQL")  # what we call


@dataclass
class Args:
    algorithms: list[str] = field(default_factory=lambda: list(MODULES))
    sizes: list[str] = field(default_factory=lambda: list(SIZES))
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    repeats: Annotated[int, Range("[1, inf)")] = 20
    """timed updates per row (the median is reported), in [1, inf)"""
    rounds: Annotated[int, Range("[1, inf)")] = 3
    """--against, --corl-cql and --compile: rounds of alternating timings; each ratio is the median of the rounds' ratios, so
    that a shared machine whose speed drifts during the run compares like with like; in [1, inf)"""
    warmup: Annotated[int, Range("[0, inf)")] = 3
    """untimed updates first, in [0, inf)"""
    peak_matmul: Annotated[int, Range("[1, inf)")] = 4096
    """n of the n x n matmul whose best time is the peak the updates are compared with, in [1, inf)"""
    cuda: bool = True
    """also benchmark CUDA when it is available"""
    relabel_rows: Annotated[int, Range("[1, inf)")] = 200_000
    """transitions in the relabeling pass (random data of the real shapes), in [1, inf)"""
    eval_episodes: Annotated[int, Range("[1, inf)")] = 10
    """episodes of the evaluation round, in [1, inf)"""
    threads: Annotated[int | None, Range("[1, inf)")] = None
    """torch CPU threads, in [1, inf) (default: torch's own choice)"""
    compile: bool = False
    """also time each update under torch.compile (as the scripts' --compile) against eager, in alternating rounds,
    with the first compiled call's seconds (the compile)"""
    against: str | None = None
    """a git revision: also time csac.py as it was there, at the same sizes and precisions (CPU, fresh processes)"""
    corl_cql: str | None = None
    """path to CORL's algorithms/offline/cql.py: time its update beside ours (CPU)"""
    skip_extras: bool = False
    """leave out the relabeling and evaluation lines"""


def linear_params(in_dim: int, hidden_dim: int, num_layers: int, out_dim: int) -> int:
    """Multiply-accumulates per row of an MLP: sum of in x out over its layers."""
    dims = [in_dim] + [hidden_dim] * num_layers + [out_dim]
    return sum(a * b for a, b in zip(dims, dims[1:]))


def update_gflop(algorithm: str, args) -> float:
    """FLOPs of one update from the layer shapes, 2 per multiply-add. Backward costs 2x forward (gradients
    of inputs and of weights), less what autograd skips: the first layer's input gradient where the input
    (state, dataset action) needs none, and the weight gradients of the critic frozen for the actor loss."""
    b, n, h, layers = args.batch_size, getattr(args, "num_sampled_actions", 0), args.hidden_dim, args.num_layers
    if algorithm == "bc":
        return 2 * (3 * b * linear_params(24, h, layers, 6) - b * 24 * h) / 1e9
    embedded = algorithm != "csac"  # a learned task embedding makes the first layer's input need a gradient
    obs_in = 48 if getattr(args, "task_embedding", "add") == "concat" else 24
    actor, critic = linear_params(obs_in, h, layers, 12), 2 * linear_params(obs_in + 6, h, layers, 1)  # 2 critics
    actor_first, critic_first = obs_in * h, 2 * (obs_in + 6) * h
    rows = (1 + 3 * n) * b  # data, uniform, policy(s), policy(s') actions, all at s
    macs = (2 * b * (3 * actor - (0 if embedded else actor_first))  # one actor forward + backward on s and s'
            + 2 * b * critic  # frozen critic for the actor loss: forward + input gradients only
            + b * critic  # target critics at s'
            + rows * (3 * critic - (0 if embedded else critic_first)))  # the critic loss's one call
    return 2 * macs / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    """Best GFLOP/s of an n x n matmul: the ceiling the updates are compared with."""
    if dtype == torch.bfloat16 and not csac.native_bf16(device):
        n, repeats = min(n, 1024), 2  # emulated bf16 runs ~1 GFLOP/s: the 4096 matmul would take minutes
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def random_batch(module, args, device: torch.device) -> tuple:
    b = args.batch_size
    obs, next_obs = torch.randn(b, 24, device=device), torch.randn(b, 24, device=device)
    actions, rewards = torch.rand(b, 6, device=device) * 2 - 1, torch.rand(b, device=device)
    if module in (mtcsac, hcsac):
        return obs, torch.randint(0, 2, (b,), device=device), actions, rewards, next_obs
    return obs, actions, rewards, next_obs


def median_time(update, batch: tuple, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of `repeats` calls of update(*batch) after `warmup` untimed ones."""
    times = []
    for i in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        update(*batch)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled(update, device: torch.device):
    return torch.compile(update, mode="reduce-overhead" if device.type == "cuda" else None)  # as the scripts do


def time_update(module, args, device: torch.device, repeats: int, warmup: int) -> float:
    return median_time(module.Learner(args, device).update, random_batch(module, args, device), device, repeats,
                       warmup)


def table_rows(args: Args):
    """(size, algorithm, precision, module, the script's Args) for every row of the tables, in print order."""
    for size in args.sizes:
        for algorithm in args.algorithms:
            for precision in args.precisions:
                module = MODULES[algorithm]
                yield size, algorithm, precision, module, module.Args(**SIZES[size], bf16=precision == "bf16")


def compare_compile(module, script_args, device: torch.device, args: Args) -> tuple[float, float, float, float]:
    """The same update eager and under torch.compile, timed in alternating rounds in this process: eager and
    compiled seconds (medians over the rounds), the speed-up (median of the rounds' ratios) and the seconds of
    the first compiled call, which traces and compiles into an empty on-disk cache (later rows of one run reuse
    what this process compiled before, so only the first row's is a fresh machine's figure)."""
    eager_update = module.Learner(script_args, device).update
    batch = random_batch(module, script_args, device)
    with tempfile.TemporaryDirectory() as cache:
        previous_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        compiled_update = compiled(module.Learner(script_args, device).update, device)
        sync(device)
        start = time.perf_counter()
        compiled_update(*batch)
        sync(device)
        compile_seconds = time.perf_counter() - start
        eager, compiled_times = [], []
        for _ in range(args.rounds):
            eager.append(median_time(eager_update, batch, device, args.repeats, args.warmup))
            compiled_times.append(median_time(compiled_update, batch, device, args.repeats, args.warmup))
        if previous_cache is None:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous_cache
    return (statistics.median(eager), statistics.median(compiled_times), median_ratio(eager, compiled_times),
            compile_seconds)


def time_relabel(device: torch.device, rows: int) -> float:
    """hcsac.py's own relabeling pass (relabel_step: Q-values of every task, thresholds, the new D*) over `rows`
    random transitions of the real shapes, paper-size critic."""
    args = hcsac.Args()
    learner = hcsac.Learner(args, device)
    data = {"observations": torch.randn(rows, 24, device=device), "actions": torch.rand(rows, 6, device=device) * 2 - 1,
            "next_observations": torch.randn(rows, 24, device=device), "rewards": torch.rand(rows, device=device),
            "task_ids": torch.arange(rows, device=device) % 2, "task_rewards": torch.rand(2, rows, device=device)}
    sync(device)
    start = time.perf_counter()
    hcsac.relabel_step(learner, data, args)
    sync(device)
    return time.perf_counter() - start


def time_evaluation(device: torch.device, episodes: int) -> float:
    actor = csac.Actor(1024, 3).to(device)
    start = time.perf_counter()
    for task in csac.TASKS:
        csac.evaluate(actor, task, episodes, seed=0, device=device)
    return time.perf_counter() - start


def keep_freed_memory(module) -> None:
    """What the scripts' train() does on CPU before the first update (absent in older revisions)."""
    if hasattr(module, "keep_freed_memory"):
        module.keep_freed_memory()


TIMING_CHILD = """
import importlib.util, json, sys, torch
sys.path.insert(0, {bench_dir!r})
import bench_update
spec = importlib.util.spec_from_file_location("csac_under_test", {path!r})
module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)
torch.set_num_threads({threads})
bench_update.keep_freed_memory(module)
args = module.Args(**{size}, bf16={bf16})
print(json.dumps(bench_update.time_update(module, args, torch.device("cpu"), {repeats}, {warmup})))
"""


def time_in_fresh_process(path: str, size: dict, bf16: bool, args: Args) -> float:
    code = TIMING_CHILD.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), path=path, size=size, bf16=bf16,
                               threads=torch.get_num_threads(), repeats=args.repeats, warmup=args.warmup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        sys.exit(f"error: timing {path} at {size} failed in its process: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_ratio(slower: list[float], faster: list[float]) -> float:
    """The median over rounds of each round's ratio (the two timings of a round ran back to back)."""
    return statistics.median(a / b for a, b in zip(slower, faster))


def csac_at_revision(revision: str, folder: str) -> str:
    """Write csac.py as it was at `revision` (checked by check_inputs) into `folder`; returns its path."""
    source = subprocess.run(["git", "show", f"{revision}:csac.py"], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout
    path = os.path.join(folder, "csac_at_revision.py")
    with open(path, "w") as f:
        f.write(source)
    return path


def compare_with_revision(args: Args) -> None:
    """csac.py at --against REV and today's in alternating fresh processes; ms are medians over the rounds, the
    speed-up is the median of the rounds' ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        old_path = csac_at_revision(args.against, tmp)
        print(f"\ncsac update, csac.py at {args.against} vs today's, fresh processes alternating, CPU, "
              f"{torch.get_num_threads()} threads:\n")
        print(f"| size | precision | {args.against} ms | today ms | speed-up |")
        print("|---|---|---|---|---|")
        for size in args.sizes:
            for precision in args.precisions:
                old, new = [], []
                for _ in range(args.rounds):
                    old.append(time_in_fresh_process(old_path, SIZES[size], precision == "bf16", args))
                    new.append(time_in_fresh_process(os.path.join(ROOT, "csac.py"), SIZES[size], precision == "bf16", args))
                print(f"| {size} | {precision} | {statistics.median(old) * 1e3:.1f} | {statistics.median(new) * 1e3:.1f} | "
                      f"{median_ratio(old, new):.2f}x |", flush=True)


def stub_attribute(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return object  # type annotations such as gym.Env


def load_corl_cql(path: str):
    """CORL's cql.py imported unmodified; d4rl, gym, pyrallis and wandb (used by its training script, not by
    the update) are stubbed so that they need not be installed. A path that is not a readable Python file
    defining what we call exits with one line."""
    flag = f"--corl-cql {path}"
    if not os.path.exists(path):
        sys.exit(f"error: {flag}: no such file (CORL's algorithms/offline/cql.py)")
    if not os.path.isfile(path):
        sys.exit(f"error: {flag}: not a file (CORL's algorithms/offline/cql.py)")
    try:
        with open(path, "rb") as f:
            compile(f.read(), path, "exec")
    except OSError as exc:
        sys.exit(f"error: {flag}: cannot be read ({exc.strerror})")
    except (SyntaxError, ValueError) as exc:
        sys.exit(f"error: {flag}: not a Python file ({type(exc).__name__}: {exc})")
    for name in ("d4rl", "gym", "pyrallis", "wandb"):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__getattr__ = stub_attribute
            sys.modules[name] = stub
    sys.modules["pyrallis"].wrap = lambda *a, **k: (lambda function: function)
    spec = importlib.util.spec_from_file_location("corl_cql", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # its own imports or code: name the file and the fault
        sys.exit(f"error: {flag}: importing it failed ({type(exc).__name__}: {exc})")
    missing = [name for name in CORL_NAMES if not hasattr(module, name)]
    if missing:
        sys.exit(f"error: {flag}: defines no {', '.join(missing)} (is it CORL's algorithms/offline/cql.py?)")
    return module


def time_corl_update(corl, size: dict, repeats: int, warmup: int) -> float:
    """ContinuousCQL.train on a random walker-shaped batch, built as CORL's train() builds it (its defaults:
    orthogonal init, 2 critics and a 3-layer actor of width 256 (the width is fixed there), fp32)."""
    config = corl.TrainConfig()
    hidden_layers = size["num_layers"]
    critics = [corl.FullyConnectedQFunction(24, 6, config.orthogonal_init, hidden_layers) for _ in range(2)]
    actor = corl.TanhGaussianPolicy(24, 6, 1.0, log_std_multiplier=config.policy_log_std_multiplier,
                                    orthogonal_init=config.orthogonal_init)
    trainer = corl.ContinuousCQL(
        critic_1=critics[0], critic_2=critics[1], actor=actor,
        critic_1_optimizer=torch.optim.Adam(critics[0].parameters(), config.qf_lr),
        critic_2_optimizer=torch.optim.Adam(critics[1].parameters(), config.qf_lr),
        actor_optimizer=torch.optim.Adam(actor.parameters(), config.policy_lr), target_entropy=-6.0,
        discount=config.discount, soft_target_update_rate=config.soft_target_update_rate, device="cpu",
        alpha_multiplier=config.alpha_multiplier, use_automatic_entropy_tuning=config.use_automatic_entropy_tuning,
        backup_entropy=config.backup_entropy, policy_lr=config.policy_lr, qf_lr=config.qf_lr, bc_steps=0,
        target_update_period=config.target_update_period, cql_n_actions=config.cql_n_actions,
        cql_importance_sample=config.cql_importance_sample, cql_lagrange=config.cql_lagrange,
        cql_target_action_gap=config.cql_target_action_gap, cql_temp=config.cql_temp, cql_alpha=config.cql_alpha,
        cql_max_target_backup=config.cql_max_target_backup, cql_clip_diff_min=config.cql_clip_diff_min,
        cql_clip_diff_max=config.cql_clip_diff_max)
    b = size["batch_size"]
    batch = [torch.randn(b, 24), torch.rand(b, 6) * 2 - 1, torch.rand(b, 1), torch.randn(b, 24), torch.zeros(b, 1)]
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        trainer.train(batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_with_corl(args: Args, corl) -> None:
    left_out = [size for size in args.sizes if SIZES[size]["hidden_dim"] != CORL_WIDTH]
    print(f"\nCORL cql.py vs our csac update, CPU, {torch.get_num_threads()} threads, same process, alternating"
          + (f" ({', '.join(left_out)} left out: CORL's networks are {CORL_WIDTH} wide)" if left_out else "") + ":\n")
    print("| size | CORL fp32 ms | ours fp32 ms | ours bf16 ms | CORL / ours fp32 | CORL / ours bf16 |")
    print("|---|---|---|---|---|---|")
    keep_freed_memory(csac)  # as csac.py's train() does; CORL's timing gains from it too
    for size in args.sizes:
        if size in left_out:
            continue
        ours = {p: [] for p in ("fp32", "bf16")}
        theirs = []
        for _ in range(args.rounds):
            theirs.append(time_corl_update(corl, SIZES[size], args.repeats, args.warmup))
            for precision in ours:
                script_args = csac.Args(**SIZES[size], bf16=precision == "bf16")
                ours[precision].append(time_update(csac, script_args, torch.device("cpu"), args.repeats, args.warmup))
        print(f"| {size} | {statistics.median(theirs) * 1e3:.1f} | {statistics.median(ours['fp32']) * 1e3:.1f} | "
              f"{statistics.median(ours['bf16']) * 1e3:.1f} | {median_ratio(theirs, ours['fp32']):.2f}x | "
              f"{median_ratio(theirs, ours['bf16']):.2f}x |", flush=True)


def time_to_learn(threshold: float = 300.0) -> None:
    """Training minutes until csac.py's walk-medium evaluation first reaches `threshold`, from the committed runs."""
    paths = sorted(glob.glob(os.path.join(ROOT, "results", "cpu", "runs", "csac__medium__walk__s*.json")))
    print(f"\ntime to learn (csac.py, walk, medium, cpu scale; first evaluation >= {threshold:.0f}; from results/cpu/runs):")
    if not paths:
        print("  – (no committed run yet: python scripts/reproduce.py --scale cpu)")
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in results["args"].items()
                         if k in ("hidden_dim", "num_layers", "batch_size", "bf16", "epochs", "init", "seed"))
        reached = next((e for e in results["tasks"]["walk"]["history"] if e["mean"] >= threshold), None)
        where = (f"{reached['train_seconds'] / 60:.1f} CPU minutes of training ({reached['step']} steps)" if reached
                 else f"not reached in {results['gradient_steps']} steps")
        print(f"  {os.path.basename(path)}: {where}; {flags}")


def check_inputs(args: Args):
    """Every input checked before any timing, a fault exiting with one line: the names of --sizes, --algorithms and
    --precisions, --against's revision, --corl-cql's file. Returns CORL's module (or None)."""
    check_choices("--sizes", args.sizes, SIZES)
    check_choices("--algorithms", args.algorithms, MODULES)
    check_choices("--precisions", args.precisions, ("fp32", "bf16"))
    if args.against:
        check_revision("--against", args.against, ("csac.py",))
    return load_corl_cql(args.corl_cql) if args.corl_cql else None


def benchmark_devices(args: Args) -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if args.cuda and torch.cuda.is_available() else [])


def section(failures: list[str], name: str, function, *arguments):
    """function(*arguments), or None where it raises: its traceback and one line go to stderr and the run goes on
    (on a GPU machine the CUDA rows follow the CPU's: a fault in a CPU row or extra must not take them away)."""
    try:
        return function(*arguments)
    except Exception as exc:
        traceback.print_exc()
        print(f"error: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        failures.append(name)
        return None


def main(args: Args) -> None:
    corl = check_inputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.against:
        compare_with_revision(args)
    if corl:
        compare_with_corl(args, corl)
    if args.against or corl:
        time_to_learn()
        return
    failures: list[str] = []
    for device in benchmark_devices(args):
        if device.type == "cpu":
            keep_freed_memory(csac)  # as the scripts' train() does on CPU
        cpu = csac.cpu_description()
        name = torch.cuda.get_device_name() if device.type == "cuda" else (
            f"CPU {cpu['model']} ({cpu['capability']}, native bf16 {'yes' if cpu['native_bf16'] else 'no'}), "
            f"{torch.get_num_threads()} threads")
        peaks = {precision: matmul_peak(device, {"fp32": torch.float32, "bf16": torch.bfloat16}[precision],
                                        args.peak_matmul) for precision in args.precisions}
        print(f"\n## {name}: matmul peak " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()) + "\n")
        print("| algorithm | size | precision | ms/update | updates/s | GFLOP/update | GFLOP/s | % of peak |")
        print("|---|---|---|---|---|---|---|---|", flush=True)
        for size, algorithm, precision, module, script_args in table_rows(args):
            row = f"{algorithm} {size} {precision} update on {device.type}"
            seconds = section(failures, row, time_update, module, script_args, device, args.repeats, args.warmup)
            gflop = update_gflop(algorithm, script_args)
            print(f"| {algorithm} | {size} | {precision} | " + (
                "failed (stderr says why) | | | | |" if seconds is None else
                f"{seconds * 1e3:.1f} | {1 / seconds:.1f} | {gflop:.1f} | {gflop / seconds:.0f} | "
                f"{100 * gflop / seconds / peaks[precision]:.0f}% |"), flush=True)
        if args.compile:
            print(f"\ntorch.compile vs eager, {name}, alternating rounds in this process:\n")
            print("| algorithm | size | precision | eager ms | compiled ms | speed-up | first compiled call s |")
            print("|---|---|---|---|---|---|---|", flush=True)
            for size, algorithm, precision, module, script_args in table_rows(args):
                row = f"{algorithm} {size} {precision} compiled update on {device.type}"
                timings = section(failures, row, compare_compile, module, script_args, device, args)
                print(f"| {algorithm} | {size} | {precision} | " + (
                    "failed (stderr says why) | | | |" if timings is None else
                    "{:.1f} | {:.1f} | {:.2f}x | {:.1f} |".format(timings[0] * 1e3, timings[1] * 1e3, *timings[2:])),
                    flush=True)
        if args.skip_extras:
            continue
        # hcsac scores the data in fp32 even under --bf16, so one measurement covers both
        relabel_s = section(failures, f"relabeling pass on {device.type}", time_relabel, device, args.relabel_rows)
        forward_s = section(failures, f"relabeling baseline on {device.type}", time_relabel_baseline, device,
                            args.relabel_rows)
        if relabel_s is not None and forward_s is not None:
            print(f"\nrelabeling pass over {args.relabel_rows} transitions (paper size, fp32): {relabel_s:.2f} s; "
                  f"one plain forward of both critics over the same rows for each task: {forward_s:.2f} s "
                  f"(ratio {relabel_s / forward_s:.2f})", flush=True)
        evaluation_s = section(failures, f"evaluation round on {device.type}", time_evaluation, device,
                               args.eval_episodes)
        if evaluation_s is not None:
            print(f"evaluation round ({args.eval_episodes} episodes per task, paper-size actor): {evaluation_s:.1f} s",
                  flush=True)
    if failures:
        sys.exit(f"error: {len(failures)} part(s) of the benchmark failed (tracebacks above): {'; '.join(failures)}")


def time_relabel_baseline(device: torch.device, rows: int) -> float:
    """The forward passes a relabeling needs at minimum: both critics, every task, every row, one big call."""
    learner = hcsac.Learner(hcsac.Args(), device)
    obs, actions = torch.randn(rows, 24, device=device), torch.rand(rows, 6, device=device) * 2 - 1
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for task_id in range(2):
            learner.critic(obs, torch.full((rows,), task_id, device=device), actions)
    sync(device)
    return time.perf_counter() - start


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    check_ranges(cli_args)
    run_main(main, cli_args)
