"""Env steps per second of the TD3 collector once learning runs: today's data/collect_td3.py against the
collector at a git revision, in one run on one machine (fresh processes, alternating rounds).

    python benchmarks/bench_collect.py --against 4673938 --rounds 3

Each round runs each collector twice in a fresh process with one torch thread: once for the 1000 random seed
frames alone and once for those plus `--learning-steps` steps with a TD3 update each; the difference of
the two wall times is the learning steps' time (start-up and the random frames cancel). Neither run can
finish early: the targets are out of reach.

--against is checked before any timing (one line and a non-zero exit if it is no commit here, or has no collector);
Ctrl-C ends a run with one line (exit status 130).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Annotated

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data"))
from collect_td3 import cpu_description  # noqa: E402
from walker_data import Range, check_ranges  # noqa: E402
from bench_cli import check_revision, run_main  # noqa: E402

COLLECTOR_FILES = ("data/collect_td3.py", "data/walker_data.py")


@dataclass
class Args:
    against: str = "4673938"
    """git revision of the collector to compare with (4673938: the last one before the one-run collector)"""
    learning_steps: Annotated[int, Range("[1, inf)")] = 3000
    """timed env steps with learning, in [1, inf)"""
    rounds: Annotated[int, Range("[1, inf)")] = 3
    """alternating rounds; the median of each collector's rounds is reported; in [1, inf)"""


def flags(today: bool, budget: int, folder: str) -> list[str]:
    common = ["--task", "walk", "--seed", "0", "--learning-starts", "1000", "--total-timesteps", str(budget),
              "--torch-threads", "1", "--out-dir", folder]
    if today:
        return [*common, "--medium-replay-target", "1000", "--checkpoint", os.path.join(folder, "c.pt"),
                "--checkpoint-every", str(10 * budget)]
    return [*common, "--eval-every", str(1000 * (budget // 1000 + 1)), "--medium-target-min", "1000"]


def wall_seconds(script: str, today: bool, budget: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, script, *flags(today, budget, folder)], cwd=folder, capture_output=True)
        return time.perf_counter() - start


def main(args: Args) -> None:
    commit = check_revision("--against", args.against, COLLECTOR_FILES)
    cpu = cpu_description()
    print(f"CPU: {cpu['model']}, {os.cpu_count()} cores, capability {cpu['capability']}, native bf16 "
          f"{'yes' if cpu['native_bf16'] else 'no'}; one torch thread per collector\n", flush=True)
    with tempfile.TemporaryDirectory() as old_tree:
        archive = subprocess.run(["git", "archive", commit, *COLLECTOR_FILES], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", old_tree], input=archive.stdout, check=True)
        scripts = {args.against: (os.path.join(old_tree, "data", "collect_td3.py"), False),
                   "today": (os.path.join(ROOT, "data", "collect_td3.py"), True)}
        rates: dict[str, list[float]] = {name: [] for name in scripts}
        for _ in range(args.rounds):
            for name, (script, today) in scripts.items():
                seconds = wall_seconds(script, today, 1000 + args.learning_steps) - wall_seconds(script, today, 1000)
                rates[name].append(args.learning_steps / seconds)
    print("| collector | env steps/s while learning (median) | rounds |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    ratio = statistics.median(new / old for new, old in zip(rates["today"], rates[args.against]))
    print(f"\ntoday / {args.against}: {ratio:.2f}x (median of the rounds' ratios)")


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    check_ranges(cli_args)
    run_main(main, cli_args)
