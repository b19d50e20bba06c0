"""Time the four scripts' own update functions, one relabeling pass and one evaluation round.

Imports bc.py, csac.py, mtcsac.py and hcsac.py (no copies of their code) and prints, per algorithm, size
and precision: ms per update (median after warm-up), updates/s, GFLOP per update counted from the layer
shapes, achieved GFLOP/s and its fraction of the matmul peak measured in the same run.

    python benchmarks/bench_update.py                 # paper and small sizes, fp32 and bf16
    python benchmarks/bench_update.py --sizes small --repeats 50
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bc  # noqa: E402
import csac  # noqa: E402
import hcsac  # noqa: E402
import mtcsac  # noqa: E402

MODULES = {"bc": bc, "csac": csac, "mtcsac": mtcsac, "hcsac": hcsac}
SIZES = {"paper": {"hidden_dim": 1024, "num_layers": 3, "batch_size": 1024},
         "small": {"hidden_dim": 256, "num_layers": 3, "batch_size": 256}}


@dataclass
class Args:
    algorithms: list[str] = field(default_factory=lambda: list(MODULES))
    sizes: list[str] = field(default_factory=lambda: list(SIZES))
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    repeats: int = 20
    """timed updates per row (the median is reported)"""
    warmup: int = 3
    cuda: bool = True
    """also benchmark CUDA when it is available"""
    relabel_rows: int = 200_000
    """transitions in the relabeling pass (random data of the real shapes)"""
    eval_episodes: int = 10
    threads: int | None = None
    """torch CPU threads (default: torch's own choice)"""
    compile: bool = False
    """time the update under torch.compile, as the scripts' --compile does (the compile itself excluded)"""


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


def time_update(module, args, device: torch.device, repeats: int, warmup: int, compile: bool) -> float:
    learner = module.Learner(args, device)
    update = learner.update
    if compile:
        update = torch.compile(update, mode="reduce-overhead" if device.type == "cuda" else None)
    batch = random_batch(module, args, device)
    times = []
    for i in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        update(*batch)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_relabel(device: torch.device, rows: int) -> float:
    args = hcsac.Args()
    learner = hcsac.Learner(args, device)
    data = {"observations": torch.randn(rows, 24, device=device), "actions": torch.rand(rows, 6, device=device) * 2 - 1,
            "next_observations": torch.randn(rows, 24, device=device), "rewards": torch.rand(rows, device=device),
            "task_ids": torch.arange(rows, device=device) % 2, "task_rewards": torch.rand(2, rows, device=device)}
    sync(device)
    start = time.perf_counter()
    q_values = hcsac.conservative_q_values(learner, data, args.relabel_batch_size)
    _, shared = hcsac.relabel(q_values, data["task_ids"], args.relabel_top)
    hcsac.build_active_dataset(data, shared, args.relabel_reward)
    sync(device)
    return time.perf_counter() - start


def time_evaluation(device: torch.device, episodes: int) -> float:
    actor = csac.Actor(1024, 3).to(device)
    start = time.perf_counter()
    for task in csac.TASKS:
        csac.evaluate(actor, task, episodes, seed=0, device=device)
    return time.perf_counter() - start


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if args.cuda and torch.cuda.is_available() else [])
    for device in devices:
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
        print(f"\n## {name}: matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s\n")
        print(f"torch.compile: {'on' if args.compile else 'off'}\n")
        print("| algorithm | size | precision | ms/update | updates/s | GFLOP/update | GFLOP/s | % of peak |")
        print("|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            for algorithm in args.algorithms:
                for precision in args.precisions:
                    module = MODULES[algorithm]
                    script_args = module.Args(**SIZES[size], bf16=precision == "bf16")
                    seconds = time_update(module, script_args, device, args.repeats, args.warmup, args.compile)
                    gflop = update_gflop(algorithm, script_args)
                    print(f"| {algorithm} | {size} | {precision} | {seconds * 1e3:.1f} | {1 / seconds:.1f} | "
                          f"{gflop:.1f} | {gflop / seconds:.0f} | {100 * gflop / seconds / peaks[precision]:.0f}% |",
                          flush=True)
        # hcsac scores the data in fp32 even under --bf16, so one measurement covers both
        relabel_s = time_relabel(device, args.relabel_rows)
        forward_s = time_relabel_baseline(device, args.relabel_rows)
        print(f"\nrelabeling pass over {args.relabel_rows} transitions (paper size, fp32): {relabel_s:.2f} s; "
              f"one plain forward of both critics over the same rows for each task: {forward_s:.2f} s "
              f"(ratio {relabel_s / forward_s:.2f})")
        print(f"evaluation round ({args.eval_episodes} episodes per task, paper-size actor): "
              f"{time_evaluation(device, args.eval_episodes):.1f} s")


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
    main(tyro.cli(Args))
