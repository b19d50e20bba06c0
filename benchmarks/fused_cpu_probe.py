"""Would compiled CPU kernels reach issue 10's 2x? A measurement only: the scripts stay eager PyTorch (decided;
the 2x target is retired), so nothing here is used by them.

Eager PyTorch makes one pass over the critics' largest activations (31 x batch rows x hidden, bf16) per op. Two
C++ loops here, built at first use by torch.utils.cpp_extension.load_inline (needs g++ and ninja; about 30 s),
fuse the backward's elementwise passes:
- the 256-to-1 output layer's input gradient, the last ReLU's backward and the bias and output-weight sums: one
  read of the activations, one write of the gradient (eager: an outer product, a mask, two reductions);
- the first ReLU's backward, in place, with its bias sum (eager: a mask into a new tensor, then a reduction).
`install(csac)` puts them into csac.py's critic through one autograd Function (forward as csac.py's oneDNN path).
The sums accumulate in fp32 where eager rounds them to bf16, so the gradients agree up to bf16 rounding.

    python benchmarks/fused_cpu_probe.py --against 4891066 --rounds 9

times csac's update at the cpu size (2x256, batch 256, bf16, one thread) in alternating fresh processes: csac.py
at REV, today's, and today's with the fused kernels, and first checks one update's gradients against eager's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Annotated

import torch
import tyro

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, ROOT)
import bench_update  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "data"))
from walker_data import Range, check_ranges  # noqa: E402

KERNELS = r"""
#include <torch/extension.h>
#include <cstdint>
#include <cstring>

static inline float to_float(uint16_t bf16) { uint32_t bits = (uint32_t)bf16 << 16; float f; std::memcpy(&f, &bits, 4); return f; }
static inline uint16_t to_bf16(float f) {  // round to nearest even, as PyTorch does
  uint32_t bits; std::memcpy(&bits, &f, 4); return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

// grad_q [N], w3 [H], y2 [N, H] (bf16): g2 = (grad_q w3^T) where y2 > 0, else 0; fp32 sums over rows of g2,
// of grad_q * y2 (the output weight's gradient) and of grad_q (the output bias's).
std::vector<torch::Tensor> output_and_relu_backward(torch::Tensor y2, torch::Tensor grad_q, torch::Tensor w3) {
  const int64_t rows = y2.size(0), width = y2.size(1);
  auto g2 = torch::empty_like(y2);
  auto fp32 = y2.options().dtype(torch::kFloat);
  auto bias_grad = torch::zeros({width}, fp32), weight_grad = torch::zeros({width}, fp32);
  const uint16_t* y = (const uint16_t*)y2.data_ptr(); const uint16_t* q = (const uint16_t*)grad_q.data_ptr();
  const uint16_t* w = (const uint16_t*)w3.data_ptr(); uint16_t* g = (uint16_t*)g2.data_ptr();
  float* bias = bias_grad.data_ptr<float>(); float* weight = weight_grad.data_ptr<float>();
  std::vector<float> w_float(width);
  for (int64_t h = 0; h < width; ++h) w_float[h] = to_float(w[h]);
  float q_sum = 0;
  for (int64_t n = 0; n < rows; ++n) {
    const float qn = to_float(q[n]); q_sum += qn;
    #pragma omp simd
    for (int64_t h = 0; h < width; ++h) {
      const float yv = to_float(y[n * width + h]);
      const float gv = yv > 0.f ? to_float(to_bf16(qn * w_float[h])) : 0.f;
      g[n * width + h] = to_bf16(gv); bias[h] += gv; weight[h] += qn * yv;
    }
  }
  return {g2, bias_grad, weight_grad, torch::full({1}, q_sum, fp32)};
}

// g1 [N, H] *= (y1 > 0) in place; returns the fp32 sum over rows (the bias gradient).
torch::Tensor relu_backward_(torch::Tensor g1, torch::Tensor y1) {
  const int64_t rows = y1.size(0), width = y1.size(1);
  auto bias_grad = torch::zeros({width}, y1.options().dtype(torch::kFloat));
  uint16_t* g = (uint16_t*)g1.data_ptr(); const uint16_t* y = (const uint16_t*)y1.data_ptr();
  float* bias = bias_grad.data_ptr<float>();
  for (int64_t n = 0; n < rows; ++n) {
    #pragma omp simd
    for (int64_t h = 0; h < width; ++h) {
      const uint16_t gv = to_float(y[n * width + h]) > 0.f ? g[n * width + h] : (uint16_t)0;
      g[n * width + h] = gv; bias[h] += to_float(gv);
    }
  }
  return bias_grad;
}
"""

_kernels = None


def kernels():
    global _kernels
    if _kernels is None:
        from torch.utils.cpp_extension import load_inline
        _kernels = load_inline("walker_fused_cpu_probe", cpp_sources=KERNELS,
                               functions=["output_and_relu_backward", "relu_backward_"],
                               extra_cflags=["-O3", "-march=native", "-fopenmp-simd"])
    return _kernels


class FusedCriticEnsemble(torch.autograd.Function):
    """Q of every member of a 2-hidden-layer critic ensemble on x [N, in] -> [E, N], bf16, weights [E, in, out]."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, w3, b3):
        linear_relu = torch.ops.mkldnn._linear_pointwise
        weights = [w.to(torch.bfloat16) for w in (w1, w2, w3)]
        biases = [b.to(torch.bfloat16) for b in (b1, b2, b3)]
        x = x.to(torch.bfloat16)
        q, activations = [], []
        for m in range(w1.shape[0]):
            y1 = linear_relu(x, weights[0][m].T, biases[0][m, 0], "relu", [None], "")
            y2 = linear_relu(y1, weights[1][m].T, biases[1][m, 0], "relu", [None], "")
            q.append(torch.addmm(biases[2][m, 0], y2, weights[2][m]))
            activations += [y1, y2]
        ctx.save_for_backward(x, *weights, *activations)
        return torch.stack(q).squeeze(-1)

    @staticmethod
    def backward(ctx, grad_q):
        x, w1, w2, w3, *activations = ctx.saved_tensors
        need_x, need_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_q = grad_q.to(torch.bfloat16).contiguous()
        weight_grads = [torch.empty(w.shape) for w in (w1, w2, w3)]
        bias_grads = [torch.empty(w.shape[0], 1, w.shape[2]) for w in (w1, w2, w3)]
        grad_x = None
        for m in range(w1.shape[0]):
            y1, y2 = activations[2 * m], activations[2 * m + 1]
            g2, bias2, weight3, bias3 = kernels().output_and_relu_backward(y2, grad_q[m], w3[m].reshape(-1))
            g1 = g2 @ w2[m].T
            bias1 = kernels().relu_backward_(g1, y1)
            if need_params:
                weight_grads[2][m], bias_grads[2][m, 0] = weight3[:, None], bias3
                weight_grads[1][m], bias_grads[1][m, 0] = y1.T @ g2, bias2
                weight_grads[0][m], bias_grads[0][m, 0] = x.T @ g1, bias1
            if need_x:
                member = (g1 @ w1[m].T).float()
                grad_x = member if grad_x is None else grad_x + member
        if not need_params:
            return grad_x, None, None, None, None, None, None
        return (grad_x, weight_grads[0], bias_grads[0], weight_grads[1], bias_grads[1], weight_grads[2],
                bias_grads[2])


def install(csac):
    """csac.Critic.forward runs its bf16 CPU calls through FusedCriticEnsemble (2 hidden layers only); returns the
    original forward, to put back."""
    original = csac.Critic.forward

    def forward(self, obs, actions):
        if not (obs.device.type == "cpu" and csac.torch.is_autocast_enabled("cpu")
                and csac.compute_dtype(obs) == torch.bfloat16 and len(self.net) == 5):
            return original(self, obs, actions)
        x = torch.cat([obs.expand(*actions.shape[:-1], csac.OBS_DIM), actions], -1).reshape(-1, csac.OBS_DIM + csac.ACT_DIM)
        layers = [module for module in self.net if isinstance(module, csac.VectorizedLinear)]
        with torch.autocast("cpu", enabled=False):
            q = FusedCriticEnsemble.apply(x, *[p for layer in layers for p in (layer.weight, layer.bias)])
        return q.reshape(self.num_critics, *actions.shape[:-1])

    csac.Critic.forward = forward
    return original


def gradient_check(csac) -> float:
    """Largest relative difference of the critic's and actor's gradients after one update, fused vs eager."""
    gradients = []
    for fused in (False, True):
        original = install(csac) if fused else None
        try:
            torch.manual_seed(0)
            learner = csac.Learner(csac.Args(hidden_dim=256, num_layers=2, batch_size=256, bf16=True),
                                   torch.device("cpu"))
            batch = bench_update.random_batch(csac, learner.args, torch.device("cpu"))
            torch.manual_seed(1)
            learner.update(*batch)
        finally:
            if original is not None:
                csac.Critic.forward = original
        gradients.append([p.grad for p in [*learner.critic.parameters(), *learner.actor.parameters()]])
    return max(((f - e).abs().max() / e.abs().max()).item() for e, f in zip(*gradients))


CHILD = """
import json, sys, torch
sys.path.insert(0, {bench_dir!r})
import bench_update, fused_cpu_probe, importlib.util
spec = importlib.util.spec_from_file_location("csac_under_test", {path!r})
csac = importlib.util.module_from_spec(spec); sys.modules[spec.name] = csac; spec.loader.exec_module(csac)
torch.set_num_threads(1)
bench_update.keep_freed_memory(csac)
if {fused}:
    fused_cpu_probe.install(csac)
args = csac.Args(**{size}, bf16=True)
print(json.dumps(bench_update.time_update(csac, args, torch.device("cpu"), {repeats}, {warmup})))
"""


@dataclass
class Args:
    against: str = "4891066"
    """the git revision of csac.py that issue 10's ratio is taken against"""
    rounds: Annotated[int, Range("[1, inf)")] = 9
    """rounds of alternating timings; each ratio is the median of the rounds' ratios, in [1, inf)"""
    repeats: Annotated[int, Range("[1, inf)")] = 20
    """timed updates per timing (the median is used), in [1, inf)"""
    warmup: Annotated[int, Range("[0, inf)")] = 3
    """untimed updates first, in [0, inf)"""


def time_child(path: str, fused: bool, args: Args) -> float:
    code = CHILD.format(bench_dir=BENCH_DIR, path=path, fused=fused, size=bench_update.SIZES["cpu"],
                        repeats=args.repeats, warmup=args.warmup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args: Args) -> None:
    import csac
    kernels()  # build once here, not inside a timed child
    print(f"gradients after one update, fused vs eager: largest relative difference {gradient_check(csac):.1e}")
    today = os.path.join(ROOT, "csac.py")
    with tempfile.TemporaryDirectory() as tmp:
        old_path = bench_update.csac_at_revision(args.against, tmp)
        times = {"old": [], "today": [], "fused": []}
        for _ in range(args.rounds):
            times["old"].append(time_child(old_path, False, args))
            times["today"].append(time_child(today, False, args))
            times["fused"].append(time_child(today, True, args))
    ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    ratio = bench_update.median_ratio
    print(f"\ncsac update at the cpu size (2x256, batch 256, bf16), CPU, 1 thread, fresh processes alternating, "
          f"{args.rounds} rounds:\n")
    print(f"| {args.against} ms | today ms | today + fused kernels ms | today over {args.against} | "
          f"fused over today | fused over {args.against} |")
    print("|---|---|---|---|---|---|")
    print(f"| {ms['old']:.1f} | {ms['today']:.1f} | {ms['fused']:.1f} | {ratio(times['old'], times['today']):.2f}x | "
          f"{ratio(times['today'], times['fused']):.2f}x | {ratio(times['old'], times['fused']):.2f}x |")


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    check_ranges(cli_args)
    main(cli_args)
