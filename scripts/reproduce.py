"""Run the Table 1 grid: BC and CSAC per task, MTCSAC and HCSAC per dataset, for a scale and a list of seeds.

Resumable across sittings: a run whose results are in results/<scale>/runs/<run>.json (committed) or
runs/<scale>/<run>/results.json is skipped, a run that was killed after a checkpoint continues from it
(--resume), and each finished run's results.json is copied to results/<scale>/runs/ at once, ready to commit.

    python scripts/reproduce.py --scale cpu --seeds 0 1 2 --workers 2
    python scripts/report.py --scale cpu
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("walk", "run")
DATASETS = ("medium", "medium-replay")
ALGORITHMS = ("bc", "csac", "mtcsac", "hcsac")
SINGLE_TASK = ("bc", "csac")


@dataclass(frozen=True)
class Scale:
    """Flag overrides given to all four scripts (their defaults are the paper's), and optionally a gradient-step
    budget: the same number of steps for every run, turned into --epochs per run from its data size and batch,
    with --eval-every and --relabel-every set to give about `evaluations` and `relabelings` per run."""
    flags: tuple[str, ...]
    steps: int | None = None
    evaluations: int = 10
    relabelings: int = 10  # the paper relabels every 100 of its 1000 epochs


SCALES = {
    # The seed's hyperparameters: 3x1024 MLPs, batch 1024, 1000 epochs. A GPU job.
    "paper": Scale(()),
    # CPU-sized, chosen by the calibration in results/cpu/calibration/: the paper's method hyperparameters,
    # a smaller network and batch, bf16, and the same gradient-step budget for every algorithm.
    "cpu": Scale(("--hidden-dim", "256", "--num-layers", "2", "--batch-size", "256", "--bf16"), steps=30_000),
    # Seconds per run: for tests and smoke checks of the grid itself, not for results.
    "tiny": Scale(("--hidden-dim", "32", "--num-layers", "2", "--batch-size", "256", "--epochs", "2", "--eval-every", "1",
                   "--eval-episodes", "1", "--relabel-every", "1")),
}
HCSAC_ONLY = ("--relabel-every",)  # flags the other scripts do not take


@dataclass
class Args:
    scale: str = "cpu"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """each in [0, 4294967295]"""
    workers: int = 2
    """runs in parallel, in [1, inf); each gets cpu_count / workers torch threads"""
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    algorithms: list[str] = field(default_factory=lambda: list(ALGORITHMS))
    data_dir: str = os.path.join(ROOT, "data")
    workdir: str = ROOT
    """runs are written to {workdir}/runs/{scale}/"""
    results_dir: str = os.path.join(ROOT, "results")
    """each finished run's results.json is copied to {results_dir}/{scale}/runs/{run}.json"""
    dry_run: bool = False
    """print the commands of the unfinished runs and stop"""


@dataclass
class Run:
    algorithm: str
    dataset: str
    seed: int
    task: str | None  # None for the multi-task algorithms, which learn (and are evaluated on) both tasks

    @property
    def name(self) -> str:
        task = f"__{self.task}" if self.task else ""
        return f"{self.algorithm}__{self.dataset}{task}__s{self.seed}"


def flag_value(flags, name: str, default: str) -> str:
    return flags[flags.index(name) + 1] if name in flags else default


def num_transitions(run: Run, data_dir: str) -> int:
    """Rows the run trains on: its task's dataset, or both tasks' for the multi-task algorithms."""
    total = 0
    for task in ([run.task] if run.task else TASKS):
        path = os.path.join(data_dir, f"walker_{task}_{run.dataset}.npz")
        try:
            with np.load(path) as npz:
                total += len(npz["observations"])
        except (OSError, KeyError, ValueError) as exc:
            sys.exit(f"error: {path}: cannot read its observations ({type(exc).__name__}: {exc})")
    return total


def scale_flags(scale_name: str, run: Run, data_dir: str) -> list[str]:
    """The scale's flags for this run, with a step budget turned into --epochs, --eval-every, --relabel-every."""
    scale, flags = SCALES[scale_name], list(SCALES[scale_name].flags)
    if scale.steps is not None:
        steps_per_epoch = num_transitions(run, data_dir) // int(flag_value(flags, "--batch-size", "1024"))
        epochs = math.ceil(scale.steps / steps_per_epoch)
        flags += ["--epochs", str(epochs), "--eval-every", str(max(1, round(epochs / scale.evaluations))),
                  "--relabel-every", str(max(1, round(epochs / scale.relabelings)))]
    out, i = [], 0
    while i < len(flags):
        takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        chunk = flags[i:i + 2] if takes_value else flags[i:i + 1]
        if run.algorithm == "hcsac" or chunk[0] not in HCSAC_ONLY:
            out += chunk
        i += len(chunk)
    return out


def grid(args: Args) -> list[Run]:
    runs = []
    for seed in args.seeds:
        for dataset in args.datasets:
            for algorithm in args.algorithms:
                for task in (TASKS if algorithm in SINGLE_TASK else (None,)):
                    runs.append(Run(algorithm, dataset, seed, task))
    return runs


def command(run: Run, args: Args) -> list[str]:
    run_dir = os.path.join("runs", args.scale, run.name)
    script = [sys.executable, os.path.join(ROOT, f"{run.algorithm}.py")]
    if os.path.isfile(os.path.join(args.workdir, run_dir, "checkpoint.pt")):
        return script + ["--resume", run_dir]  # killed earlier: continue from its checkpoint
    task = ["--task", run.task] if run.task else []
    return script + ["--dataset", run.dataset, *task, "--seed", str(run.seed), "--data-dir", args.data_dir,
                     "--run-name", f"{args.scale}/{run.name}", *scale_flags(args.scale, run, args.data_dir)]


def finished_results(run: Run, args: Args) -> str:
    return os.path.join(args.results_dir, args.scale, "runs", f"{run.name}.json")


def is_finished(run: Run, args: Args) -> bool:
    return os.path.isfile(finished_results(run, args)) or os.path.isfile(
        os.path.join(args.workdir, "runs", args.scale, run.name, "results.json"))


def execute(run: Run, args: Args, threads: int) -> tuple[Run, int, float]:
    run_dir = os.path.join(args.workdir, "runs", args.scale, run.name)
    os.makedirs(run_dir, exist_ok=True)
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(os.path.join(run_dir, "stdout.log"), "a") as log:
        code = subprocess.run(command(run, args), cwd=args.workdir, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code == 0:  # ready to commit, so that a later sitting counts the run as done
        os.makedirs(os.path.dirname(finished_results(run, args)), exist_ok=True)
        shutil.copyfile(os.path.join(run_dir, "results.json"), finished_results(run, args))
    return run, code, time.time() - start


def main(args: Args) -> None:
    if args.scale not in SCALES:
        sys.exit(f"error: unknown scale {args.scale!r}; expected one of {', '.join(SCALES)}")
    if args.workers < 1:
        sys.exit(f"error: --workers {args.workers} is outside its range [1, inf)")
    for seed in args.seeds:
        if not 0 <= seed <= 2**32 - 1:
            sys.exit(f"error: --seeds {seed} is outside its range [0, 4294967295]")
    runs = grid(args)
    todo = [r for r in runs if not is_finished(r, args)]
    print(f"{len(runs)} runs in the {args.scale} grid, {len(runs) - len(todo)} already finished, {len(todo)} to do",
          flush=True)
    if args.dry_run:
        for run in todo:
            print(" ".join(command(run, args)))
        return
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    start, failures = time.time(), []
    with ThreadPoolExecutor(args.workers) as pool:
        for future in as_completed([pool.submit(execute, run, args, threads) for run in todo]):
            run, code, seconds = future.result()
            status = "done" if code == 0 else f"FAILED (exit {code}, see its stdout.log)"
            print(f"[{(time.time() - start) / 60:6.1f} min] {run.name}: {status} in {seconds / 60:.1f} min", flush=True)
            if code != 0:
                failures.append(run.name)
    print(f"grid finished in {(time.time() - start) / 60:.1f} min; {len(failures)} failed", flush=True)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main(tyro.cli(Args))
