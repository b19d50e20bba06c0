"""Run the Table 1 grid: BC and CSAC per task, MTCSAC and HCSAC per dataset, for a scale and a list of seeds.

Resumable: a run whose results.json exists is skipped, and a run that was killed after a checkpoint
continues from it (--resume), so a grid can be finished over several sittings.

    python scripts/reproduce.py --scale small --seeds 0 1 2 --workers 2
    python scripts/report.py --scale small
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("walk", "run")
DATASETS = ("medium", "medium-replay")
ALGORITHMS = ("bc", "csac", "mtcsac", "hcsac")
SINGLE_TASK = ("bc", "csac")

# Every scale is a set of flag overrides given to all four scripts; the scripts' defaults are the paper's.
SCALES = {
    # The seed's hyperparameters: 3x1024 MLPs, batch 1024, 1000 epochs. A GPU job.
    "paper": [],
    # CPU-sized (see README, "Results"): 2x128 MLPs, batch 128, bf16 autocast, 30 epochs, evaluated every
    # 5 epochs, relabeled every 10. Measured here with two runs side by side, one thread each: a CQL update
    # takes ~13 ms (0.1 ms per transition), so the 3-seed grid (2.9M transitions per epoch over its 24
    # CQL runs) takes about 1.5 hours on a 2-core machine.
    "small": ["--hidden-dim", "128", "--num-layers", "2", "--batch-size", "128", "--bf16", "--epochs", "30",
              "--eval-every", "5", "--relabel-every", "10"],
    # Seconds per run: for tests and smoke checks of the grid itself, not for results.
    "tiny": ["--hidden-dim", "32", "--num-layers", "2", "--batch-size", "256", "--epochs", "2", "--eval-every", "1",
             "--eval-episodes", "1", "--relabel-every", "1"],
}
HCSAC_ONLY = ("--relabel-every",)  # flags the other scripts do not take


@dataclass
class Args:
    scale: str = "small"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    workers: int = 2
    """runs in parallel; each gets cpu_count / workers torch threads"""
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    algorithms: list[str] = field(default_factory=lambda: list(ALGORITHMS))
    data_dir: str = os.path.join(ROOT, "data")
    workdir: str = ROOT
    """runs are written to {workdir}/runs/{scale}/"""
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


def scale_flags(scale: str, algorithm: str) -> list[str]:
    flags, out = SCALES[scale], []
    i = 0
    while i < len(flags):
        takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        chunk = flags[i:i + 2] if takes_value else flags[i:i + 1]
        if algorithm == "hcsac" or chunk[0] not in HCSAC_ONLY:
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
                     "--run-name", f"{args.scale}/{run.name}", *scale_flags(args.scale, run.algorithm)]


def execute(run: Run, args: Args, threads: int) -> tuple[Run, int, float]:
    run_dir = os.path.join(args.workdir, "runs", args.scale, run.name)
    os.makedirs(run_dir, exist_ok=True)
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(os.path.join(run_dir, "stdout.log"), "a") as log:
        code = subprocess.run(command(run, args), cwd=args.workdir, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return run, code, time.time() - start


def main(args: Args) -> None:
    if args.scale not in SCALES:
        sys.exit(f"error: unknown scale {args.scale!r}; expected one of {', '.join(SCALES)}")
    runs = grid(args)
    todo = [r for r in runs if not os.path.isfile(os.path.join(args.workdir, "runs", args.scale, r.name, "results.json"))]
    print(f"{len(runs)} runs in the {args.scale} grid, {len(runs) - len(todo)} already finished, {len(todo)} to do",
          flush=True)
    if args.dry_run:
        for run in todo:
            print(" ".join(command(run, args)))
        return
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    start, failures = time.time(), []
    with ThreadPoolExecutor(args.workers) as pool:
        for run, code, seconds in pool.map(lambda r: execute(r, args, threads), todo):
            status = "done" if code == 0 else f"FAILED (exit {code}, see its stdout.log)"
            print(f"[{(time.time() - start) / 60:6.1f} min] {run.name}: {status} in {seconds / 60:.1f} min", flush=True)
            if code != 0:
                failures.append(run.name)
    print(f"grid finished in {(time.time() - start) / 60:.1f} min; {len(failures)} failed", flush=True)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main(tyro.cli(Args))
