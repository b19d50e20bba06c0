"""Where the CPU-sized update spends its time: one critic member's forward and backward over the critic loss's
rows, op by op, with the ops csac.py's oneDNN path runs (OneDNNLinearReLU, then the 256-to-1 output layer).

    python benchmarks/critic_ops.py                          # cpu scale: 2x256, batch 256, 10 sampled actions
    python benchmarks/critic_ops.py --chunks 512 2048        # also the member's total with its rows in chunks

Each figure is the median over --repeats passes of the op's time inside the pass (the pass's other ops keep the
caches as busy as in the update). --chunks repeats the whole pass over row chunks of that size, accumulating the
weight gradients, to see whether rows small enough for the L2 cache pay for their smaller matmuls.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csac  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from walker_data import Range, check_ranges  # noqa: E402


@dataclass
class Args:
    hidden_dim: Annotated[int, Range("[1, inf)")] = 256
    """hidden width, in [1, inf)"""
    batch_size: Annotated[int, Range("[1, inf)")] = 256
    """batch size; the critic loss's call has (1 + 3 x 10) x batch_size rows, in [1, inf)"""
    repeats: Annotated[int, Range("[1, inf)")] = 30
    """timed passes (the median is reported), in [1, inf)"""
    threads: Annotated[int, Range("[1, inf)")] = 1
    """torch CPU threads, in [1, inf)"""
    chunks: Annotated[list[int], Range("[1, inf)")] = field(default_factory=list)
    """row-chunk sizes to time the whole pass at, each in [1, inf)"""


def member_pass(x, weights, grad_q, times: dict | None) -> list[torch.Tensor]:
    """Forward and backward of one 2-hidden-layer member, as csac.py's oneDNN path computes them; returns the
    weight and bias gradients. `times` collects each op's seconds."""
    (w1, b1), (w2, b2), (w3, b3) = weights
    clock = [time.perf_counter()]

    def tick(name: str) -> None:
        now = time.perf_counter()
        if times is not None:
            times[name].append(now - clock[0])
        clock[0] = now

    linear_relu = torch.ops.mkldnn._linear_pointwise
    y1 = linear_relu(x, w1, b1, "relu", [None], ""); tick("forward, layer 1 (+ReLU)")  # noqa: E702
    y2 = linear_relu(y1, w2, b2, "relu", [None], ""); tick("forward, layer 2 (+ReLU)")  # noqa: E702
    torch.nn.functional.linear(y2, w3, b3); tick("forward, output layer")  # noqa: E702
    grad = grad_q @ w3; tick("output layer: input gradient")  # noqa: E702
    grads = [(grad_q.T @ y2), grad_q.sum(0)]; tick("output layer: weight and bias gradients")  # noqa: E702
    grad = torch.ops.aten.threshold_backward(grad, y2, 0); tick("layer 2: ReLU backward")  # noqa: E702
    grads.append((y1.T @ grad).T); tick("layer 2: weight gradient")  # noqa: E702
    grads.append(grad.sum(0)); tick("layer 2: bias gradient")  # noqa: E702
    grad = grad @ w2; tick("layer 2: input gradient")  # noqa: E702
    grad = torch.ops.aten.threshold_backward(grad, y1, 0); tick("layer 1: ReLU backward")  # noqa: E702
    grads.append((x.T @ grad).T); tick("layer 1: weight gradient")  # noqa: E702
    grads.append(grad.sum(0)); tick("layer 1: bias gradient")  # noqa: E702
    return grads


def chunked_pass(x, weights, grad_q, chunk: int) -> None:
    totals = None
    for x_part, grad_part in zip(x.split(chunk), grad_q.split(chunk)):
        grads = member_pass(x_part, weights, grad_part, None)
        totals = grads if totals is None else [t + g for t, g in zip(totals, grads)]


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    csac.keep_freed_memory()  # as the scripts do on CPU
    torch.manual_seed(0)
    rows = (1 + 3 * csac.Args().num_sampled_actions) * args.batch_size
    critic = csac.Critic(args.hidden_dim, 2)
    layers = [m for m in critic.net if isinstance(m, csac.VectorizedLinear)]
    weights = [(layer.weight[0].T.to(torch.bfloat16), layer.bias[0, 0].to(torch.bfloat16)) for layer in layers]
    x = torch.randn(rows, csac.OBS_DIM + csac.ACT_DIM, dtype=torch.bfloat16)
    grad_q = torch.randn(rows, 1, dtype=torch.bfloat16) / rows
    times, totals = defaultdict(list), []
    for i in range(3 + args.repeats):
        start = time.perf_counter()
        member_pass(x, weights, grad_q, times if i >= 3 else None)
        if i >= 3:
            totals.append(time.perf_counter() - start)
    print(f"one critic member, {rows} rows x {args.hidden_dim}, bf16, {args.threads} thread(s), "
          f"median of {args.repeats} passes:\n")
    print("| op | ms |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {statistics.median(seconds) * 1e3:.2f} |")
    print(f"| **whole pass** | **{statistics.median(totals) * 1e3:.2f}** |")
    for chunk in args.chunks:
        seconds = []
        for i in range(3 + args.repeats):
            start = time.perf_counter()
            chunked_pass(x, weights, grad_q, chunk)
            if i >= 3:
                seconds.append(time.perf_counter() - start)
        print(f"whole pass in chunks of {chunk} rows: {statistics.median(seconds) * 1e3:.2f} ms")


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    check_ranges(cli_args)
    main(cli_args)
