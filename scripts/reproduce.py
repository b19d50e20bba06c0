"""Run the Table 1 grid: BC and CSAC per task, MTCSAC and HCSAC per dataset, for a scale and a list of seeds.

Resumable across sittings: a run whose results are in results/<scale>/runs/<run>.json (committed) or
runs/<scale>/<run>/results.json is skipped, a run that was killed or preempted after a checkpoint continues
from it (--resume), and each finished run's results.json is copied to results/<scale>/runs/ at once, ready to
commit. SIGTERM or Ctrl-C stops every running run after its current gradient step with a checkpoint (exit 75,
"resume later"); the same command continues the grid.

    python scripts/reproduce.py --scale cpu --seeds 0 1 2 --workers 2
    python scripts/reproduce.py --scale cpu-wide --seeds 0 1 2 --workers 1                  # the report's widths
    python scripts/reproduce.py --scale paper --launcher ray --gpus-per-run 0.25        # 4 runs per GPU
    python scripts/reproduce.py --scale paper --launcher ray --ray-address auto        # an existing Ray cluster
    python scripts/report.py --scale cpu

A run stopped mid-way is also parked: its checkpoint is copied into results/<scale>/in-progress/<run>/ in
pieces small enough to commit, and a later grid, in a fresh checkout, resumes from there.

With --launcher ray every run is one Ray task running the same command; on a cluster the repository (data,
runs/ and results/) must be at the same path on every node, e.g. on a shared file system.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Annotated

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))
from walker_data import Range, atomic_write_bytes, check_ranges, file_sha256  # noqa: E402  (shared with the data tools)
TASKS = ("walk", "run")
DATASETS = ("medium", "medium-replay")
ALGORITHMS = ("bc", "csac", "mtcsac", "hcsac")
SINGLE_TASK = ("bc", "csac")


@dataclass(frozen=True)
class Scale:
    """Flags given to all four scripts (their defaults are the paper's). With `budget_steps` B, BC and CSAC train
    B gradient steps and an algorithm in `multipliers` m x B; the multi-task agents' epoch covers both tasks'
    data, so 2B gives them the single-task agents' epochs (the report's rule), and their evaluation at step B
    (which the scripts' fixed evaluation steps include) is what a B-step run would have shown: scripts/report.py
    reads both, equal steps and equal epochs, from one run. `precision` pins --bf16 or --no-bf16. With
    `relabelings`, the grid also passes --epochs (those that hold the budget) and hcsac's --relabel-every (about
    that many relabelings per B gradient steps), both from the size of the run's data, as --scale cpu does
    inside the scripts."""
    flags: tuple[str, ...]
    budget_steps: int | None = None
    multipliers: dict[str, int] = field(default_factory=dict)
    precision: str | None = None
    relabelings: int | None = None
    datasets: tuple[str, ...] = DATASETS  # the grid's default --datasets
    # scripts/report.py: equal-steps readings before B as well, and the plateau reading with P(CSAC > BC)
    early_steps: tuple[int, ...] = ()
    plateau: bool = False
    beside: str | None = None  # scripts/report.py: this scale's runs set beside that scale's (another width)


SCALES = {
    # The seed's hyperparameters: 3x1024 MLPs, batch 1024, 1000 epochs for every algorithm. A GPU job.
    "paper": Scale(()),
    # CPU-sized, defined once in each script (CPU_SCALE, CPU_SCALE_STEPS; chosen by the calibration in
    # results/cpu/calibration/): a smaller network and batch, B = 40,000 gradient steps (2B for the multi-task
    # agents), bf16 (the committed table's precision; refused where the CPU only emulates it, see main).
    "cpu": Scale(("--scale", "cpu"), budget_steps=40_000, multipliers={"mtcsac": 2, "hcsac": 2}, precision="bf16"),
    # The report's networks (3x1024, the authors' MTCSAC and HCSAC; their CSAC was 3x256) for all four
    # algorithms at the cpu scale's batch: does the report's ordering hold at equal width? B = 16,000, an
    # evaluation every 1,000 steps, the medium files (results/cpu-wide/README.md).
    "cpu-wide": Scale(("--hidden-dim", "1024", "--num-layers", "3", "--batch-size", "256", "--eval-every-steps", "1000",
                       "--eval-episodes", "10"), budget_steps=16_000, multipliers={"mtcsac": 2, "hcsac": 2},
                      precision="bf16", relabelings=10, datasets=("medium",), early_steps=(8_000,), plateau=True,
                      beside="cpu"),
    # Seconds per run: for tests and smoke checks of the grid itself, not for results.
    # (B = 4 steps, 8 for the multi-task agents: 2 and about 1 epochs of the tests' one-episode files)
    "tiny": Scale(("--hidden-dim", "32", "--num-layers", "2", "--batch-size", "256", "--eval-every-steps", "2",
                   "--eval-episodes", "1", "--relabel-every", "1"), budget_steps=4, multipliers={"mtcsac": 2, "hcsac": 2}),
}
HCSAC_ONLY = ("--relabel-every",)  # flags the other scripts do not take
PREEMPTED = 75  # the scripts' exit code after SIGTERM/SIGINT with a checkpoint: resume later, not a failure
LAUNCHERS = ("local", "ray")


@dataclass
class Args:
    scale: str = "cpu"
    seeds: Annotated[list[int], Range("[0, 4294967295]")] = field(default_factory=lambda: [0, 1, 2])
    """each in [0, 4294967295]"""
    workers: Annotated[int, Range("[1, inf)")] = 2
    """runs in parallel, in [1, inf); each gets cpu_count / workers torch threads"""
    datasets: list[str] | None = None
    """default: the scale's (medium and medium-replay; cpu-wide: medium)"""
    algorithms: list[str] = field(default_factory=lambda: list(ALGORITHMS))
    data_dir: str = os.path.join(ROOT, "data")
    workdir: str = ROOT
    """runs are written to {workdir}/runs/{scale}/"""
    results_dir: str = os.path.join(ROOT, "results")
    """each finished run's results.json is copied to {results_dir}/{scale}/runs/{run}.json"""
    dry_run: bool = False
    """print the commands of the unfinished runs and stop"""
    park: bool = False
    """copy the checkpoint of every unfinished run into {results_dir}/{scale}/in-progress/ (to be committed) and
    stop: for a grid that was killed before it could park its runs itself"""
    launcher: str = "local"
    """local (--workers processes on this machine) or ray (one Ray task per run, here or on a Ray cluster)"""
    ray_address: str | None = None
    """with --launcher ray: the cluster to join ("auto", or host:port); default: start Ray on this machine"""
    gpus_per_run: Annotated[float, Range("[0, inf)")] = 0.0
    """with --launcher ray, in [0, inf): GPUs per run, fractional to share one (0.25: four runs per GPU)"""
    cpus_per_run: Annotated[float, Range("(0, inf)")] = 1.0
    """with --launcher ray, in (0, inf): CPUs per run (its torch threads: the whole part, at least 1)"""
    ray_cpus: Annotated[int | None, Range("[1, inf)")] = None
    """with --launcher ray and no --ray-address, in [1, inf): CPUs of the Ray instance started here (default: all)"""


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


def scale_flags(scale_name: str, run: Run, data_dir: str) -> list[str]:
    """The scale's flags for this run (the flags only hcsac takes left out for the others), its step budget
    and its precision."""
    scale = SCALES[scale_name]
    flags, out, i = list(scale.flags), [], 0
    while i < len(flags):
        takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        chunk = flags[i:i + 2] if takes_value else flags[i:i + 1]
        if run.algorithm == "hcsac" or chunk[0] not in HCSAC_ONLY:
            out += chunk
        i += len(chunk)
    if scale.budget_steps is not None:
        out += ["--max-steps", str(scale.budget_steps * scale.multipliers.get(run.algorithm, 1))]
    if scale.relabelings is not None:
        steps_per_epoch = max(1, num_transitions(run, data_dir) // int(flags[flags.index("--batch-size") + 1]))
        out += ["--epochs", str(math.ceil(int(out[out.index("--max-steps") + 1]) / steps_per_epoch))]
        if run.algorithm == "hcsac":  # as the scripts' --scale cpu: from the budget B, so 2B holds twice as many
            out += ["--relabel-every", str(max(1, round(math.ceil(scale.budget_steps / steps_per_epoch)
                                                        / scale.relabelings)))]
    if scale.precision is not None:
        out.append("--bf16" if scale.precision == "bf16" else "--no-bf16")
    return out


def num_transitions(run: Run, data_dir: str) -> int:
    """Rows of the run's training data (both tasks' for the multi-task agents), read from the files' headers."""
    import numpy as np  # only here: the other scales' grids read no data

    rows = 0
    for path in data_files(run, data_dir):
        try:
            with np.load(path) as files:
                rows += len(files["rewards"])
        except (OSError, ValueError, KeyError) as exc:
            sys.exit(f"error: {path}: cannot read its number of transitions ({type(exc).__name__}: {exc})")
    return rows


def grid(args: Args) -> list[Run]:
    runs = []
    for seed in args.seeds:
        for dataset in (args.datasets or SCALES[args.scale].datasets):
            for algorithm in args.algorithms:
                for task in (TASKS if algorithm in SINGLE_TASK else (None,)):
                    runs.append(Run(algorithm, dataset, seed, task))
    return runs


def command(run: Run, args: Args) -> list[str]:
    run_dir = os.path.join("runs", args.scale, run.name)
    script = [sys.executable, os.path.join(ROOT, f"{run.algorithm}.py")]
    if os.path.isfile(os.path.join(args.workdir, run_dir, "checkpoint.pt")) or os.path.isdir(parked_folder(run, args)):
        # killed earlier: continue from its checkpoint, on this grid's data folder (the run checks the files' sha256)
        return script + ["--resume", run_dir, "--data-dir", args.data_dir]
    task = ["--task", run.task] if run.task else []
    return script + ["--dataset", run.dataset, *task, "--seed", str(run.seed), "--data-dir", args.data_dir,
                     "--run-name", f"{args.scale}/{run.name}", *scale_flags(args.scale, run, args.data_dir)]


def finished_results(run: Run, args: Args) -> str:
    return os.path.join(args.results_dir, args.scale, "runs", f"{run.name}.json")


def data_files(run: Run, data_dir: str) -> list[str]:
    """The dataset files the run trains on, as its script names them."""
    return [os.path.join(data_dir, f"walker_{task}_{run.dataset}.npz") for task in ([run.task] if run.task else TASKS)]


def data_fault(recorded: dict | None, run: Run, data_dir: str) -> str | None:
    """Why a run's recorded data (file name -> sha256) is not today's files (None when it is)."""
    if recorded is None:
        return "it records no sha256 of its data (made before they were recorded)"
    for path in data_files(run, data_dir):
        name = os.path.basename(path)
        if not os.path.isfile(path):
            return f"{path} is missing"
        if recorded.get(name) != file_sha256(path):
            return f"it trained on another {name} (sha256 {str(recorded.get(name))[:12]}, today {file_sha256(path)[:12]})"
    return None


def results_fault(path: str, run: Run, data_dir: str | None = None) -> str | None:
    """Why `path` is not a finished run's results file (None when it is): it must parse and hold what
    report.py reads, for every task the run learns, and (given `data_dir`) have trained on today's data files,
    so that one table never mixes datasets."""
    try:
        with open(path, "rb") as f:
            results = json.loads(f.read())
        tasks = [run.task] if run.task else list(TASKS)
        for task in tasks:
            entry = results["tasks"][task]
            if not entry["history"] or "mean" not in entry["final"]:
                return f"no evaluation of {task}"
        if not isinstance(results["gradient_steps"], int) or results["algorithm"] != run.algorithm:
            return "not this run's results"
        if data_dir is not None:
            return data_fault(results.get("data"), run, data_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def is_finished(run: Run, args: Args) -> bool:
    """Done when a complete results file made on today's data files exists, committed or in the run folder (then
    copied to be committed); a torn or partial one, or one made on other data, says so in one line and the run is
    resumed (or redone) instead."""
    committed, local = finished_results(run, args), os.path.join(args.workdir, "runs", args.scale, run.name, "results.json")
    for path in (committed, local):
        if not os.path.isfile(path):
            continue
        fault = results_fault(path, run)
        if fault is not None:
            print(f"{path}: not a complete results file ({fault})", flush=True)
            continue
        with open(path, "rb") as f:
            fault = data_fault(json.loads(f.read()).get("data"), run, args.data_dir)
        if fault is not None:
            print(f"{path}: not counted: {fault}; the run is redone on today's data", flush=True)
            continue
        if path == local:  # finished, but its copy is missing or torn (a grid killed before copying)
            atomic_copy(local, committed)
        shutil.rmtree(parked_folder(run, args), ignore_errors=True)  # done: its park is history
        return True
    return False


def atomic_copy(source: str, destination: str) -> None:
    with open(source, "rb") as f:
        atomic_write_bytes(destination, f.read())


def load_checkpoint(path: str) -> tuple[dict | None, str | None]:
    """A run folder's checkpoint.pt, or why it cannot be resumed from."""
    import torch  # only here: the grid itself needs no torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(checkpoint, dict) or "learner" not in checkpoint:
            return None, "not a training checkpoint"
    except Exception as exc:  # truncated zip, garbage bytes, pickle errors: all mean the same here
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return checkpoint, None


def set_aside_bad_checkpoint(run_dir: str, run: Run, data_dir: str) -> None:
    """A checkpoint that does not load, or that trained on other data files than today's: kept aside as
    checkpoint.pt.bad (or .other-data), and the run restarts from scratch."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if os.path.isfile(path):
        checkpoint, fault = load_checkpoint(path)
        if fault is not None:
            os.replace(path, path + ".bad")
            print(f"{path}: not a loadable checkpoint ({fault}); kept aside as checkpoint.pt.bad, the run restarts "
                  f"from scratch", flush=True)
            return
        fault = data_fault(checkpoint.get("data"), run, data_dir)
        if fault is not None:
            os.replace(path, path + ".other-data")
            print(f"{path}: {fault}; kept aside as checkpoint.pt.other-data, the run restarts from scratch", flush=True)


PARK_PIECE_BYTES = 40 * 2**20  # committed pieces stay well below the ~50 MB a repository's file may have


def parked_folder(run: Run, args: Args) -> str:
    return os.path.join(args.results_dir, args.scale, "in-progress", run.name)


def park(run: Run, args: Args) -> bool:
    """Copy the run folder's checkpoint.pt into {results_dir}/{scale}/in-progress/{run}/ as checkpoint.pt.000,
    .001, ... (at most PARK_PIECE_BYTES each) and checkpoint.pt.sha256, ready to commit, so that a later
    sitting in a fresh checkout resumes the run (a 3x1024 checkpoint, ~95 MB, is too large for one file).
    The folder is replaced whole: a kill mid-way leaves the previous park. Returns whether there was one."""
    source = os.path.join(args.workdir, "runs", args.scale, run.name, "checkpoint.pt")
    if not os.path.isfile(source):
        return False
    with open(source, "rb") as f:
        content = f.read()
    folder = parked_folder(run, args)
    staging, previous = folder + ".new", folder + ".old"
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    os.makedirs(staging)
    pieces = range(0, len(content), PARK_PIECE_BYTES)
    for number, begin in enumerate(pieces):
        atomic_write_bytes(os.path.join(staging, f"checkpoint.pt.{number:03d}"), content[begin:begin + PARK_PIECE_BYTES])
    atomic_write_bytes(os.path.join(staging, "checkpoint.pt.sha256"),
                       f"{hashlib.sha256(content).hexdigest()}  checkpoint.pt  {len(pieces)} pieces\n".encode())
    if os.path.isdir(folder):
        os.replace(folder, previous)
    os.replace(staging, folder)
    shutil.rmtree(previous, ignore_errors=True)
    return True


def unpark(run: Run, args: Args, run_dir: str) -> None:
    """Put a parked checkpoint back into the run folder, unless the folder's own checkpoint is as far or further
    (the same checkout continuing); a park whose pieces do not add up to its sha256 is ignored, in one line."""
    folder = parked_folder(run, args)
    if not os.path.isdir(folder):
        return
    try:
        with open(os.path.join(folder, "checkpoint.pt.sha256")) as f:
            expected, _, count, _ = f.read().split()
        content = b""
        for number in range(int(count)):
            with open(os.path.join(folder, f"checkpoint.pt.{number:03d}"), "rb") as f:
                content += f.read()
    except (OSError, ValueError) as exc:
        print(f"{folder}: not a complete park ({type(exc).__name__}: {exc}); ignored", flush=True)
        return
    if hashlib.sha256(content).hexdigest() != expected:
        print(f"{folder}: its pieces do not match their sha256 (a torn or partial commit?); ignored", flush=True)
        return
    local = os.path.join(run_dir, "checkpoint.pt")
    if os.path.isfile(local):
        import io

        import torch

        parked_step = torch.load(io.BytesIO(content), map_location="cpu", weights_only=False).get("global_step", -1)
        checkpoint, fault = load_checkpoint(local)
        if fault is None and checkpoint.get("global_step", -1) >= parked_step:
            return
    atomic_write_bytes(local, content)
    print(f"{run.name}: resumes from its parked checkpoint ({folder})", flush=True)


def park_all(args: Args) -> None:
    """--park: every unfinished run's checkpoint, parked (a run still training is left alone)."""
    parked = []
    for run in grid(args):
        run_dir = os.path.join(args.workdir, "runs", args.scale, run.name)
        if is_finished(run, args) or not os.path.isfile(os.path.join(run_dir, "checkpoint.pt")):
            continue
        with open(os.path.join(run_dir, ".lock"), "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                print(f"{run.name}: still training (its folder is locked); not parked", flush=True)
                continue
            park(run, args)
            parked.append(run.name)
    print(f"parked {len(parked)} runs in {os.path.join(args.results_dir, args.scale, 'in-progress')}"
          + (f": {', '.join(parked)}" if parked else ""), flush=True)


def hold_run_folder(run: Run, run_dir: str, poll_seconds: float = 1.0):
    """Take the run folder's lock (the flock every training process holds on run_dir/.lock), first waiting for
    a run still alive from an earlier grid (its own session outlived a SIGKILLed grid): never a second copy.
    Returns the locked file, to be handed to the run's process."""
    lock = open(os.path.join(run_dir, ".lock"), "a+")
    waiting = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except OSError:
            if not waiting:
                lock.seek(0)
                print(f"{run.name}: still running from an earlier grid ({lock.read().strip() or 'pid unknown'}); "
                      f"waiting for it", flush=True)
                waiting = True
            time.sleep(poll_seconds)


class GridLock:
    """One grid per results folder: an flock on {results_dir}/.grid.lock holding pid and host, released by the
    kernel when the grid dies however it dies (a stale lock never needs deleting)."""

    def __init__(self, results_dir: str):
        os.makedirs(results_dir, exist_ok=True)
        self.path = os.path.join(results_dir, ".grid.lock")
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            sys.exit(f"error: {self.path}: another grid is running on this results folder "
                     f"({self.file.read().strip() or 'pid unknown'})")
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()} on {platform.node()}\n")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # releases the flock


class LocalRuns:
    """The runs this machine is running, so that SIGTERM or Ctrl-C to the grid reaches each of them once (they
    checkpoint and exit with PREEMPTED) and queued runs do not start."""

    def __init__(self):
        self.lock, self.running, self.stopping = threading.Lock(), set(), False

    def stop(self, signum=None, frame=None) -> None:
        with self.lock:
            self.stopping = True
            for process in self.running:
                process.send_signal(signal.SIGTERM)

    def start(self, popen) -> subprocess.Popen | None:
        with self.lock:
            if self.stopping:
                return None
            process = popen()
            self.running.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.running.discard(process)


def execute(run: Run, args: Args, threads: int,
            local_runs: LocalRuns | None = None) -> tuple[Run, int, float | None]:
    """Run one script to its end (or its preemption); copy its results.json when it finished. The seconds are None
    for a run that never started (queued when the grid was stopped)."""
    run_dir = os.path.join(args.workdir, "runs", args.scale, run.name)
    os.makedirs(run_dir, exist_ok=True)
    with hold_run_folder(run, run_dir) as lock:  # held from here into the run's process
        if results_fault(os.path.join(run_dir, "results.json"), run, args.data_dir) is None:  # an orphan finished it
            atomic_copy(os.path.join(run_dir, "results.json"), finished_results(run, args))
            shutil.rmtree(parked_folder(run, args), ignore_errors=True)
            return run, 0, 0.0
        unpark(run, args, run_dir)
        set_aside_bad_checkpoint(run_dir, run, args.data_dir)
        start = time.time()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "RUN_FOLDER_LOCK_FD": str(lock.fileno())}
        log = open(os.path.join(run_dir, "stdout.log"), "a")
        popen = functools.partial(subprocess.Popen, command(run, args), cwd=args.workdir, stdout=log,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True,  # signals come from us
                                  pass_fds=(lock.fileno(),))
        process = local_runs.start(popen) if local_runs else popen()
    with log:  # the run's process holds the lock now (and its own copy of the log)
        if process is None:
            return run, PREEMPTED, None
        try:
            code = process.wait()
        except KeyboardInterrupt:  # a cancelled Ray task: let the run checkpoint before it goes
            process.send_signal(signal.SIGTERM)
            code = process.wait()
        if local_runs:
            local_runs.finished(process)
    if code in (-signal.SIGTERM, -signal.SIGINT):  # stopped before it could checkpoint: redone from its last one
        code = PREEMPTED
    if code == 0:  # ready to commit, so that a later sitting counts the run as done
        fault = results_fault(os.path.join(run_dir, "results.json"), run, args.data_dir)
        if fault is not None:
            print(f"{run_dir}/results.json: exit 0 but {fault}; counted as failed", flush=True)
            return run, 1, time.time() - start
        atomic_copy(os.path.join(run_dir, "results.json"), finished_results(run, args))
        shutil.rmtree(parked_folder(run, args), ignore_errors=True)  # done: its park is history
    elif code == PREEMPTED:  # stopped mid-way: parked, so that a later sitting's checkout resumes it
        park(run, args)
    return run, code, time.time() - start


def describe(run: Run, code: int, seconds: float | None, start: float) -> str:
    if seconds is None:
        return f"[{(time.time() - start) / 60:6.1f} min] {run.name}: not started (the grid was stopping)"
    if code < 0:  # the run's process was killed (SIGKILL, OOM): the same command resumes it from its checkpoint
        failed = f"FAILED (killed by {signal.Signals(-code).name}; the same command resumes it from its checkpoint)"
    else:
        failed = f"FAILED (exit {code}, see its stdout.log)"
    status = {0: "done", PREEMPTED: "stopped (the same command resumes it from its checkpoint)"}.get(code, failed)
    return f"[{(time.time() - start) / 60:6.1f} min] {run.name}: {status} in {seconds / 60:.1f} min"


def launch_local(todo: list[Run], args: Args, start: float) -> list[tuple[Run, int]]:
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    local_runs, outcomes = LocalRuns(), []
    previous = {sig: signal.signal(sig, local_runs.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with ThreadPoolExecutor(args.workers) as pool:
            for future in as_completed([pool.submit(execute, run, args, threads, local_runs) for run in todo]):
                run, code, seconds = future.result()
                print(describe(run, code, seconds, start), flush=True)
                outcomes.append((run, code))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return outcomes


def launch_ray(todo: list[Run], args: Args, start: float) -> list[tuple[Run, int]]:
    """One Ray task per run, each asking for --cpus-per-run CPUs and --gpus-per-run GPUs; Ray places them."""
    try:
        import ray  # only this launcher needs it
    except ImportError:
        sys.exit("error: --launcher ray needs Ray: pip install -r requirements.txt")
    ray.init(address=args.ray_address, num_cpus=None if args.ray_address else args.ray_cpus, include_dashboard=False,
             log_to_driver=False,  # the workers import the shared data module (walker_data) as this process does
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "data"),
                                                                      os.path.join(ROOT, "scripts")])}})
    # ray.init installs its own SIGTERM handler (a stack dump, exit 1): SIGTERM stays Ctrl-C, so runs checkpoint
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    task = ray.remote(execute).options(num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run, max_retries=0)
    threads = max(1, int(args.cpus_per_run))
    pending = [task.remote(run, args, threads) for run in todo]
    outcomes = []
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            run, code, seconds = ray.get(done[0])
            print(describe(run, code, seconds, start), flush=True)
            outcomes.append((run, code))
    except KeyboardInterrupt:  # SIGINT or SIGTERM: every running task lets its run checkpoint (see execute)
        for ref in pending:
            ray.cancel(ref)
        for ref in pending:
            try:
                run, code, seconds = ray.get(ref)
                print(describe(run, code, seconds, start), flush=True)
                outcomes.append((run, code))
            except (ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError):
                pass
    finally:
        ray.shutdown()
    return outcomes


def native_cpu_bf16() -> bool:
    import torch  # only here: the grid itself needs no torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def emulated_bf16_fault(args: Args) -> str | None:
    """Why this machine must not run the scale's runs (None when it may): a scale that pins bf16, runs on this
    machine's CPU, and a CPU without native bf16 (AVX-512 BF16 or AMX), where autocast is emulated, ~16x slower
    (benchmarks/cpu_speed.md); such a sitting works on something else."""
    if SCALES[args.scale].precision != "bf16" or args.gpus_per_run > 0 or args.ray_address is not None:
        return None  # on GPUs, or on a cluster whose CPUs this machine cannot see
    import torch

    if torch.cuda.is_available() or native_cpu_bf16():
        return None
    return (f"the {args.scale} scale pins bf16 and this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
            f"bf16 (AVX-512 BF16 or AMX): emulated, it runs ~16x slower (benchmarks/cpu_speed.md); run this grid on "
            f"a CPU that has it, or on GPUs (--launcher ray --gpus-per-run 0.25)")


def main(args: Args) -> None:
    if args.scale not in SCALES:
        sys.exit(f"error: unknown scale {args.scale!r}; expected one of {', '.join(SCALES)}")
    if args.launcher not in LAUNCHERS:
        sys.exit(f"error: unknown launcher {args.launcher!r}; expected one of {', '.join(LAUNCHERS)}")
    check_ranges(args)
    with GridLock(args.results_dir):
        if args.park:
            park_all(args)
        else:
            run_grid(args)


def run_grid(args: Args) -> None:
    runs = grid(args)
    todo = [r for r in runs if not is_finished(r, args)]
    print(f"{len(runs)} runs in the {args.scale} grid, {len(runs) - len(todo)} already finished, {len(todo)} to do",
          flush=True)
    fault = emulated_bf16_fault(args) if todo else None
    if args.dry_run:
        try:
            for run in todo:
                print(" ".join(command(run, args)), flush=True)
            if fault:
                print(f"note: not on this machine: {fault}", flush=True)
        except BrokenPipeError:  # `--dry-run | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return
    if fault:
        sys.exit(f"error: {fault}")
    start = time.time()
    if args.launcher == "local":
        outcomes = launch_local(todo, args, start)
    else:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: KeyboardInterrupt
        try:
            outcomes = launch_ray(todo, args, start)
        finally:
            signal.signal(signal.SIGTERM, previous)
    failures = [run.name for run, code in outcomes if code not in (0, PREEMPTED)]
    preempted = [run.name for run, code in outcomes if code == PREEMPTED] + [
        run.name for run in todo if run.name not in {r.name for r, _ in outcomes}]
    print(f"grid stopped after {(time.time() - start) / 60:.1f} min; {len(failures)} failed, {len(preempted)} to resume "
          "(run the same command again)" if preempted else
          f"grid finished in {(time.time() - start) / 60:.1f} min; {len(failures)} failed", flush=True)
    if failures:
        sys.exit(1)
    if preempted:
        sys.exit(PREEMPTED)


if __name__ == "__main__":
    main(tyro.cli(Args))
