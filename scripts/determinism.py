"""Does the same seed give the same numbers in every fresh process? A check for the README's known limitation.

    python scripts/determinism.py --script csac.py --runs 80

runs one of the four scripts --runs times, one fresh process after another, with the same seed on tiny data (one
random-action episode per task and dataset, as the tests make) and the resume test's flags, and groups the runs
by their final weights (every network in the checkpoint, bit for bit). It prints one row per distinct result: how
many runs ended there, the final return per task, and the largest weight difference from the most common result.
One row means every process computed the same bits. Run it on an idle machine: the rare alternative results were
seen only there.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "data"), os.path.join(ROOT, "tests")]
os.environ.setdefault("MUJOCO_GL", "disable")
from conftest import checkpoint_networks, save_tiny_datasets  # noqa: E402  (as the tests make and read them)
from test_robustness import RESUME_FLAGS, SCRIPT_FLAGS  # noqa: E402  (exactly the resume test's runs)
from walker_data import Range, check_ranges  # noqa: E402

import csac  # noqa: E402  (for code_version only)

RUN_FLAGS = [*RESUME_FLAGS, "--run-name", "run"]


@dataclass
class Args:
    script: Literal["bc.py", "csac.py", "mtcsac.py", "hcsac.py"] = "csac.py"
    """the script to run"""
    runs: Annotated[int, Range("[2, inf)")] = 20
    """fresh processes, one after another, in [2, inf)"""
    threads: Annotated[int | None, Range("[1, inf)")] = None
    """OMP_NUM_THREADS for the runs, in [1, inf) (default: the environment's, else torch's own choice)"""


def final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    """Every network tensor of the learner in run_dir's checkpoint (optimiser states left out), by flat name."""
    weights = {}
    for name, state in checkpoint_networks(run_dir).items():
        if isinstance(state, torch.Tensor):
            weights[name] = state
        else:
            weights.update({f"{name}.{key}": tensor for key, tensor in state.items()})
    return weights


def fingerprint(weights: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha1()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def group_runs(runs: list[dict[str, torch.Tensor]]) -> list[tuple[str, list[int], float]]:
    """(fingerprint, indices of the runs that ended there, largest absolute weight difference from the most common
    result) per distinct result, the most common first."""
    prints = [fingerprint(weights) for weights in runs]
    order = [p for p, _ in Counter(prints).most_common()]  # ties keep the order of first appearance
    reference = runs[prints.index(order[0])]
    groups = []
    for p in order:
        members = [i for i, q in enumerate(prints) if q == p]
        weights = runs[members[0]]
        difference = max((weights[name].float() - reference[name].float()).abs().max().item() for name in reference)
        groups.append((p, members, difference))
    return groups


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(args: Args) -> None:
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    code = csac.code_version()
    print(f"{args.script}, {args.runs} fresh processes, commit {code['commit']}{' (dirty tree)' if code['dirty'] else ''}, "
          f"{cpu_model()}, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}",
          flush=True)
    runs, returns = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        os.makedirs(data_dir)
        save_tiny_datasets(data_dir)
        for index in range(args.runs):
            work = os.path.join(tmp, f"work{index}")
            os.makedirs(work)
            result = subprocess.run([sys.executable, os.path.join(ROOT, args.script), "--data-dir", data_dir,
                                     *SCRIPT_FLAGS[args.script], *RUN_FLAGS], cwd=work, env=env, capture_output=True,
                                    text=True)
            if result.returncode != 0:
                last_line = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
                sys.exit(f"error: run {index} of {args.script} failed: {last_line}")
            run_dir = os.path.join(work, "runs", "run")
            runs.append(final_weights(run_dir))
            with open(os.path.join(run_dir, "results.json")) as f:
                returns.append({task: r["final"]["mean"] for task, r in json.load(f)["tasks"].items()})
    groups = group_runs(runs)
    print(f"\n{len(groups)} distinct result(s):\n")
    print("| weights | runs | final return | largest weight difference from the first row |")
    print("|---|---|---|---|")
    for p, members, difference in groups:
        final = ", ".join(f"{task} {value!r}" for task, value in returns[members[0]].items())
        print(f"| {p} | {len(members)} of {args.runs} | {final} | {difference:.1e} |")


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    check_ranges(cli_args)
    main(cli_args)
