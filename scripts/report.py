"""Table 1, Figure 4 and the interval plot from the grid's runs: results/<scale>/table1.md, figure4.png and
intervals.png.

Reads only results/<scale>/runs/*.json, the finished runs' results.json files that scripts/reproduce.py
copies there: each holds the run's arguments, code version, data sha256, every evaluation (epoch, step,
returns) and final numbers, so the committed table and figures can be remade from what is committed.

Three readings of the same runs (reproduce.Scale): at a scale with a step budget B, BC and CSAC train B steps
and MTCSAC and HCSAC 2B, so equal steps = every run's evaluation at step B, equal epochs = every run's final
evaluation (the report's rule), best checkpoint = every run's best evaluation (the report's protocol;
optimistic, since it selects on the evaluation itself). Beside mean ± std over seeds: the IQM over runs x tasks
with a 95% stratified bootstrap interval, and P(MTCSAC > CSAC), P(HCSAC > MTCSAC) per task (scripts/intervals.py).
A scale with `beside` (cpu-wide: 3x1024) ends with its runs' means set beside that scale's (cpu: 2x256) and the
seed report's, at equal steps and at each one's end.

    python scripts/report.py --scale cpu
"""

from __future__ import annotations

import glob
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

from intervals import (MIN_RUNS, enough_runs, improvement_ci, iqm, probability_of_improvement,  # noqa: E402
                       stratified_bootstrap_ci)
from reproduce import ALGORITHMS, DATASETS, ROOT, SCALES, SINGLE_TASK, TASKS  # noqa: E402
from walker_data import atomic_write_bytes  # noqa: E402  (reproduce put data/ on the path)

LABELS = {"bc": "BC", "csac": "CSAC", "mtcsac": "MTCSAC", "hcsac": "HCSAC"}
COLORS = {"bc": "tab:blue", "csac": "tab:orange", "mtcsac": "tab:green", "hcsac": "tab:red"}
# The seed report's Table 1 (mean ± std over 5 seeds), for comparison only; "replay" is medium-replay.
SEED_TABLE = {
    ("medium", "walk"): {"bc": (551.52, 125.24), "csac": (653.57, 233.83), "mtcsac": (870.06, 92.99), "hcsac": (907.38, 67.39)},
    ("medium", "run"): {"bc": (317.26, 9.46), "csac": (213.67, 49.56), "mtcsac": (306.16, 20.43), "hcsac": (308.38, 7.64)},
    ("medium-replay", "walk"): {"bc": (829.63, 74.64), "csac": (812.80, 146.82), "mtcsac": (931.37, 9.21), "hcsac": (927.43, 14.76)},
    ("medium-replay", "run"): {"bc": (244.80, 33.35), "csac": (234.81, 22.11), "mtcsac": (254.31, 11.60), "hcsac": (256.79, 10.13)},
    # the averages as published (the medium-replay BC std, 53.00, is not the mean of 74.64 and 33.35)
    ("medium", "average"): {"bc": (434.39, 67.35), "csac": (433.62, 141.70), "mtcsac": (588.11, 56.71), "hcsac": (607.88, 37.52)},
    ("medium-replay", "average"): {"bc": (537.22, 53.00), "csac": (523.81, 84.47), "mtcsac": (592.84, 10.41), "hcsac": (592.11, 12.44)},
}


@dataclass
class Args:
    scale: str = "cpu"
    results_dir: str = os.path.join(ROOT, "results")
    """reads {results_dir}/{scale}/runs/*.json, writes table1.md and figure4.png beside runs/"""


def load_runs(runs_dir: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*.json"))):
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: {path}: not a readable results.json ({exc})") from None
    return runs


def precision(results: dict) -> str:
    """bf16 or fp32; results files from before the field existed say it by their --bf16 flag."""
    return results.get("precision") or ("bf16" if results["args"].get("bf16") else "fp32")


def cpu_label(cpu: dict) -> str:
    """One process's CPU as the tables name it, e.g. "AMD EPYC (family/model 26/2, AVX512, native bf16, 2 threads)";
    family/model, AMX and threads only where the results recorded them (newer results)."""
    details = [f"family/model {cpu['family_model']}"] if "family_model" in cpu else []
    details.append(cpu["capability"] + (" + AMX" if cpu.get("amx") else ""))
    details.append(f"{'native' if cpu['native_bf16'] else 'emulated'} bf16")
    if "threads" in cpu:
        details.append(f"{cpu['threads']} thread{'s' if cpu['threads'] > 1 else ''}")
    return f"{cpu['model']} ({', '.join(details)})"


def machines(runs: list[dict]) -> str:
    """The CPUs the runs trained on, each with how many runs used it. `cpus` names the machine of every process
    that trained a run (None: one from before it was recorded) and, in newer results, its torch threads; older
    results have `cpu`, the last one's alone."""
    counts, incomplete = defaultdict(int), 0
    for results in runs:
        cpus = results.get("cpus") or (
            [None] * (len(results.get("code", [])) - 1) + [results["cpu"]] if results.get("cpu") else [])
        incomplete += None in cpus
        for cpu in {cpu_label(c) for c in cpus if c}:
            counts[cpu] += 1
    text = "; ".join(f"{cpu}: {n} run{'s' if n > 1 else ''}" for cpu, n in sorted(counts.items())) or "not recorded"
    if incomplete:
        text += (f" ({incomplete} resumed run{'s name' if incomplete > 1 else ' names'} only some of the machines used: "
                 "a process from before `cpus` was recorded)")
    return text


def gpus(runs: list[dict]) -> str | None:
    """The GPUs the runs trained on, each with how many runs used it (`gpus` names the GPU of every process that
    trained a run, None for one on a CPU); None where no run used one."""
    counts = defaultdict(int)
    for results in runs:
        for gpu in {f"{g['name']} (compute capability {g['capability']}, {g['memory_gib']} GiB, CUDA {g['cuda']}, "
                    f"driver {g['driver'] or 'unknown'})" for g in results.get("gpus") or [] if g}:
            counts[gpu] += 1
    return "; ".join(f"{gpu}: {n} run{'s' if n > 1 else ''}" for gpu, n in sorted(counts.items())) or None


def check_one_precision_per_cell(runs: list[dict]) -> None:
    """A cell averages runs of one precision only: bf16 and fp32 runs are different measurements."""
    seen = defaultdict(lambda: defaultdict(list))
    for results in runs:
        for task in results["tasks"]:
            cell = (results["args"]["dataset"], task, results["algorithm"])
            seen[cell][precision(results)].append(results.get("run_name", "?"))
    for (dataset, task, algorithm), by_precision in sorted(seen.items()):
        if len(by_precision) > 1:
            found = "; ".join(f"{p}: {', '.join(names)}" for p, names in sorted(by_precision.items()))
            raise SystemExit(f"error: the cell {algorithm} {dataset} {task} mixes precisions ({found}); report each "
                             f"precision from its own --results-dir")


def check_one_dataset_per_file(runs: list[dict]) -> None:
    """One table never mixes datasets: every run that read a file name read the same bytes (sha256)."""
    seen = defaultdict(lambda: defaultdict(list))
    for results in runs:
        for name, digest in (results.get("data") or {}).items():
            seen[name][digest].append(results.get("run_name", "?"))
    for name, by_digest in sorted(seen.items()):
        if len(by_digest) > 1:
            found = "; ".join(f"{digest[:12]}: {', '.join(names)}" for digest, names in sorted(by_digest.items()))
            raise SystemExit(f"error: the runs read different versions of {name} ({found}); report one dataset per "
                             f"table")


READINGS = {  # name -> the evaluation of a run's history it takes
    "equal steps": "the evaluation at step B (BC and CSAC: their final)",
    "equal epochs": "the final evaluation (MTCSAC and HCSAC at 2B steps: the single-task agents' epochs)",
    "best checkpoint": "the best evaluation of the run (the report's protocol; optimistic: it selects on the "
                       "evaluation itself)",
    "final": "the final evaluation",
    "plateau": "each run's mean over its last quarter of evaluations (where it has levelled off, its level)",
}
LEVELLED_OFF = 0.05  # the plateau criterion's tolerance, see plateau_rows


def equal_steps_at(steps: int) -> str:
    """The name of an equal-steps reading before B (READINGS describes it too)."""
    name = f"equal steps at {steps:,}"
    READINGS[name] = f"every run's evaluation at step {steps:,}"
    return name


def reading_step(name: str, budget_steps: int | None) -> int | None:
    """The gradient step an equal-steps reading takes its evaluation at (None for the other readings)."""
    if name == "equal steps":
        return budget_steps
    if name.startswith("equal steps at "):
        return int(name.rsplit(" ", 1)[1].replace(",", ""))
    return None


def quarter_means(history: list[dict]) -> tuple[float, float]:
    """The mean evaluation return over the last quarter of a run's evaluations, and over the quarter before."""
    size = max(1, len(history) // 4)
    last, before = history[-size:], history[-2 * size:-size] or history[-size:]
    return float(np.mean([e["mean"] for e in last])), float(np.mean([e["mean"] for e in before]))


def reading(results: dict, task: str, name: str, budget_steps: int | None) -> float:
    """One run's value on one task under a reading (READINGS)."""
    history = results["tasks"][task]["history"]
    if name == "best checkpoint":
        return float(max(evaluation["mean"] for evaluation in history))
    if name == "plateau":
        return quarter_means(history)[0]
    step = reading_step(name, budget_steps)
    if step is not None:
        at_step = [evaluation["mean"] for evaluation in history if evaluation["step"] == step]
        if not at_step:
            raise SystemExit(f"error: {results.get('run_name', '?')}: no evaluation of {task} at step {step} "
                             f"(evaluated at steps {[e['step'] for e in history]}); the equal-steps reading needs one "
                             f"exactly there (the scale's --max-steps and --eval-every-steps)")
        return float(at_step[0])
    return float(history[-1]["mean"])  # equal epochs, final


def cell_values(runs: list[dict], name: str = "final", budget_steps: int | None = None,
                last: int = 1) -> dict[tuple[str, str, str], list[float]]:
    """(dataset, task, algorithm) -> per seed, the run's value under the reading `name`; or with `last` > 1 the
    mean of its last `last` evaluations (one evaluation of 10 episodes is noisy: a walker that falls scores ~20)."""
    cells = defaultdict(list)
    for results in runs:
        for task, entry in results["tasks"].items():
            value = (np.mean([evaluation["mean"] for evaluation in entry["history"][-last:]]) if last > 1
                     else reading(results, task, name, budget_steps))
            cells[(results["args"]["dataset"], task, results["algorithm"])].append(float(value))
    return cells


def interval_estimates(cells: dict, datasets=DATASETS) -> dict[tuple[str, str], tuple[float, float | None, float | None, int]]:
    """(dataset, algorithm) -> IQM over all runs x tasks, its 95% stratified bootstrap interval (tasks the strata;
    None, None where a task has fewer than MIN_RUNS runs) and the fewest runs of a task; raw returns pooled over
    the two tasks, as the report's average row pools them."""
    out = {}
    for dataset in datasets:
        for algorithm in ALGORITHMS:
            strata = [np.array(cells[(dataset, task, algorithm)]) for task in TASKS if cells.get((dataset, task, algorithm))]
            if len(strata) == len(TASKS):
                interval = stratified_bootstrap_ci(strata, iqm) if enough_runs(strata) else (None, None)
                out[(dataset, algorithm)] = (float(iqm(np.concatenate(strata))), *interval,
                                             min(len(stratum) for stratum in strata))
    return out


COMPARISONS = (("mtcsac", "csac"), ("hcsac", "mtcsac"))  # the report's claims: the multi-task agents above CSAC,
                                                          # HCSAC above MTCSAC


def improvement_rows(cells: dict, datasets=DATASETS, comparisons=COMPARISONS) -> list[str]:
    """Markdown rows: per dataset and task, P(X > Y) with its 95% bootstrap interval for each comparison."""
    lines = ["| Dataset | Task | " + " | ".join(f"P({LABELS[x]} > {LABELS[y]})" for x, y in comparisons) + " |",
             "|---|---|" + "---|" * len(comparisons)]
    for dataset in datasets:
        for task in TASKS:
            texts = []
            for x, y in comparisons:
                xs, ys = cells.get((dataset, task, x)), cells.get((dataset, task, y))
                if not xs or not ys:
                    texts.append("–")
                    continue
                value = f"{float(probability_of_improvement(np.array(xs), np.array(ys))):.2f}"
                if not enough_runs([xs, ys]):
                    texts.append(f"{value} ({len(xs)} vs {len(ys)} runs: no interval)")
                    continue
                low, high = improvement_ci(xs, ys)
                texts.append(f"{value} [{low:.2f}, {high:.2f}]")
            lines.append(f"| {dataset} | {task} | " + " | ".join(texts) + " |")
    return lines


def iqm_rows(estimates_by_reading: dict[str, dict], datasets=DATASETS) -> list[str]:
    lines = ["| Reading | Dataset | " + " | ".join(LABELS[a] for a in ALGORITHMS) + " |",
             "|---|---|" + "---|" * len(ALGORITHMS)]
    for name, estimates in estimates_by_reading.items():
        for dataset in datasets:
            texts = []
            for algorithm in ALGORITHMS:
                if (dataset, algorithm) not in estimates:
                    texts.append("–")
                    continue
                value, low, high, fewest = estimates[(dataset, algorithm)]
                texts.append(f"{value:.1f} [{low:.1f}, {high:.1f}]" if low is not None
                             else f"{value:.1f} ({fewest} run per task: no interval)")
            lines.append(f"| {name} | {dataset} | " + " | ".join(texts) + " |")
    return lines


def plateau_rows(runs: list[dict], datasets=DATASETS) -> list[str]:
    """Markdown rows: per dataset and algorithm, the rise from the quarter of evaluations before the last to the
    last (means pooled over runs x tasks), and whether that is levelled off (a rise of at most LEVELLED_OFF)."""
    quarters = defaultdict(list)
    for results in runs:
        for entry in results["tasks"].values():
            quarters[(results["args"]["dataset"], results["algorithm"])].append(quarter_means(entry["history"]))
    lines = ["| Dataset | " + " | ".join(LABELS[a] for a in ALGORITHMS) + " |", "|---|" + "---|" * len(ALGORITHMS)]
    for dataset in datasets:
        texts = []
        for algorithm in ALGORITHMS:
            pairs = quarters.get((dataset, algorithm))
            if not pairs:
                texts.append("–")
                continue
            last, before = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
            rise = (last - before) / max(abs(before), 1e-9)
            verdict = "levelled off" if rise <= LEVELLED_OFF else "**still rising**"
            texts.append(f"{before:.1f} → {last:.1f} ({rise:+.0%}, {verdict})")
        lines.append(f"| {dataset} | " + " | ".join(texts) + " |")
    return lines


def networks(runs: list[dict]) -> str:
    """The runs' network shapes as layers x width, e.g. 3x1024."""
    return ", ".join(sorted({f"{r['args'].get('num_layers', '?')}x{r['args'].get('hidden_dim', '?')}" for r in runs}))


def beside_rows(runs: list[dict], other: list[dict], names: list[str], datasets=DATASETS) -> list[str]:
    """Markdown rows: per reading (equal steps at a given step, plateau, best checkpoint) and task, each algorithm's
    mean over seeds in `runs` and in `other` as "ours / other's" (seeds in brackets where fewer than 3; '–' where
    missing), then the seed report's Table 1."""
    def mean(group: list[dict], dataset: str, task: str, algorithm: str, name: str) -> str:
        values = [reading(r, task, name, None) for r in group
                  if r["algorithm"] == algorithm and r["args"]["dataset"] == dataset and task in r["tasks"]]
        return "–" if not values else f"{np.mean(values):.1f}" + (f" ({len(values)})" if len(values) < 3 else "")

    lines = ["| Reading | Dataset | Task | " + " | ".join(LABELS[a] for a in ALGORITHMS) + " |",
             "|---|---|---|" + "---|" * len(ALGORITHMS)]
    for dataset in datasets:
        for name in names:
            for task in TASKS:
                cells = [f"{mean(runs, dataset, task, a, name)} / {mean(other, dataset, task, a, name)}"
                         for a in ALGORITHMS]
                lines.append(f"| {name} | {dataset} | {task} | " + " | ".join(cells) + " |")
        for task in TASKS:
            cells = [f"{SEED_TABLE[(dataset, task)][a][0]:.1f}" for a in ALGORITHMS]
            lines.append(f"| the report's Table 1 | {dataset} | {task} | " + " | ".join(cells) + " |")
    return lines


def cell_stats(cells: dict, datasets=DATASETS) -> dict[tuple[str, str], dict[str, tuple | None]]:
    """(dataset, task) -> algorithm -> (mean, std, seeds) over seeds, None where no run finished."""
    return {(d, t): {a: (float(np.mean(cells[(d, t, a)])), float(np.std(cells[(d, t, a)])), len(cells[(d, t, a)]))
                     if cells.get((d, t, a)) else None for a in ALGORITHMS} for d in datasets for t in TASKS}


def table_rows(stats: dict[tuple[str, str], dict[str, tuple | None]], full: int | None = None,
               datasets=DATASETS) -> list[str]:
    """Markdown rows in the seed's layout from (mean, std[, seeds]) per cell; the per-dataset average (unless
    given) is the mean of the two tasks' means and of their stds, as in the seed's table; the best mean of each
    row in bold; '–' where a run is missing; a cell with fewer seeds than `full` says how many."""
    lines = ["| Dataset | Task | " + " | ".join(LABELS[a] for a in ALGORITHMS) + " |", "|---|---|" + "---|" * len(ALGORITHMS)]
    for dataset in datasets:
        rows = [(task, stats[(dataset, task)]) for task in TASKS]
        average = stats.get((dataset, "average"), {})
        for algorithm in ALGORITHMS:
            pairs = [row[algorithm] for _, row in rows]
            if algorithm not in average:
                average[algorithm] = None if None in pairs else (*np.mean([p[:2] for p in pairs], axis=0),
                                                                   *[min(p[2] for p in pairs)][:len(pairs[0]) - 2])
        for label, row in rows + [("average", average)]:
            present = [row[a][0] for a in ALGORITHMS if row[a] is not None]
            best = max(present) if present else None
            cells = []
            for algorithm in ALGORITHMS:
                if row[algorithm] is None:
                    cells.append("–")
                    continue
                mean, std, *seeds = row[algorithm]  # ours carry their number of seeds, the seed report's do not
                text = f"{mean:.2f} (1 seed)" if seeds == [1] else f"{mean:.2f} ± {std:.2f}"
                if seeds and seeds[0] > 1 and seeds[0] != full:
                    text += f" ({seeds[0]} seeds)"
                cells.append(f"**{text}**" if mean == best else text)
            lines.append(f"| {dataset} | {label} | " + " | ".join(cells) + " |")
    return lines


def run_costs(runs: list[dict]) -> list[str]:
    lines = ["| run | seeds | epochs (the last may be partial) | gradient steps | wall time (min) |", "|---|---|---|---|---|"]
    groups = defaultdict(list)
    for results in runs:
        task = results["args"].get("task") if results["algorithm"] in SINGLE_TASK else None
        groups[(results["algorithm"], results["args"]["dataset"], task)].append(results)
    for (algorithm, dataset, task), members in sorted(groups.items(), key=lambda kv: (ALGORITHMS.index(kv[0][0]), kv[0][1:])):
        steps = sorted({r["gradient_steps"] for r in members})
        epochs = sorted({next(iter(r["tasks"].values()))["final"]["epoch"] for r in members})  # the last, maybe partial
        minutes = np.mean([r["wall_time_s"] for r in members]) / 60
        name = f"{LABELS[algorithm]} {dataset}" + (f" {task}" if task else " (both tasks)")
        lines.append(f"| {name} | {len(members)} | {', '.join(map(str, epochs))} | {', '.join(map(str, steps))} "
                     f"| {minutes:.1f} |")
    hours = sum(r["wall_time_s"] for r in runs) / 3600
    threads = {c.get("threads") for r in runs for c in r.get("cpus") or [{}]}  # None: not recorded (older results)
    if threads == {1}:
        how = "each run one process with one torch thread: as many core-hours"
    else:
        how = ("each run one process; wall time, not core-hours: a run's torch threads are in its `cpus` where "
               "recorded, and the scale's README says how the grid ran")
    lines += ["", f"All {len(runs)} runs: {hours:.1f} hours of wall time in total ({how})."]
    return lines


def curves(runs: list[dict]) -> dict[tuple[str, str, str], list[tuple[np.ndarray, np.ndarray]]]:
    """(dataset, task, algorithm) -> per seed (gradient steps, evaluation returns) from the evaluation history."""
    out = defaultdict(list)
    for results in runs:
        for task, entry in results["tasks"].items():
            steps = np.array([evaluation["step"] for evaluation in entry["history"]])
            values = np.array([evaluation["mean"] for evaluation in entry["history"]])
            out[(results["args"]["dataset"], task, results["algorithm"])].append((steps, values))
    return out


def plot(curve_data, path: str, title: str, budget_steps: int | None = None, datasets=DATASETS) -> None:
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets) + (1 if len(datasets) == 1 else 0), 8),
                             squeeze=False)
    for col, dataset in enumerate(datasets):
        for row, task in enumerate(TASKS):
            ax = axes[row][col]
            for algorithm in ALGORITHMS:
                seeds = curve_data.get((dataset, task, algorithm), [])
                if not seeds:
                    continue
                length = min(len(values) for _, values in seeds)  # evaluations every seed has
                steps = np.mean([s[:length] for s, _ in seeds], axis=0)
                values = np.array([v[:length] for _, v in seeds])
                mean, std = values.mean(0), values.std(0)
                ax.plot(steps, mean, color=COLORS[algorithm],
                        label=f"{LABELS[algorithm]} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
                ax.fill_between(steps, mean - std, mean + std, color=COLORS[algorithm], alpha=0.2)
            if budget_steps is not None:
                ax.axvline(budget_steps, color="gray", linestyle="--", linewidth=1,
                           label=f"B = {budget_steps:,} steps (equal steps)")
            ax.set_title(f"walker {task}, {dataset}")
            ax.set_xlabel("gradient steps")
            ax.set_ylabel("evaluation return")
            ax.grid(alpha=0.3)
            if any(curve_data.get((dataset, task, a)) for a in ALGORITHMS):
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    save_figure(fig, title, path)


def save_figure(fig, title: str, path: str) -> None:
    """Title, layout and an atomic write of the PNG (a reader never sees half a figure)."""
    fig.suptitle(title)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=120, format="png")
    atomic_write_bytes(path, image.getvalue())
    plt.close(fig)


def plot_intervals(estimates_by_reading: dict[str, dict], path: str, title: str, datasets=DATASETS) -> None:
    """Per dataset, each algorithm's IQM with its 95% interval, one marker per reading."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(11 if len(datasets) > 1 else 7, 3.6), squeeze=False)
    markers = ["o", "s", "^", "D", "v", "P"]
    for col, dataset in enumerate(datasets):
        ax = axes[0][col]
        for r, (name, estimates) in enumerate(estimates_by_reading.items()):
            for a, algorithm in enumerate(ALGORITHMS):
                if (dataset, algorithm) not in estimates:
                    continue
                value, low, high, _ = estimates[(dataset, algorithm)]
                y = a + 0.2 * (r - (len(estimates_by_reading) - 1) / 2)
                error = None if low is None else [[value - low], [high - value]]  # a point alone: no interval
                ax.errorbar(value, y, xerr=error, fmt=markers[r % len(markers)],
                            color=COLORS[algorithm], capsize=3, label=name if a == 0 else None, mfc="white" if r else None)
        ax.set_yticks(range(len(ALGORITHMS)), [LABELS[a] for a in ALGORITHMS])
        ax.set_ylim(len(ALGORITHMS) - 0.5, -0.5)  # every algorithm's row, top to bottom, even where it has no runs
        ax.set_xlabel("IQM of evaluation return over runs x tasks; bar: 95% CI (none from 1 run per task)", fontsize=8)
        ax.set_title(dataset)
        ax.grid(alpha=0.3, axis="x")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_figure(fig, title, path)


def main(args: Args) -> None:
    out_dir = os.path.join(args.results_dir, args.scale)
    runs = load_runs(os.path.join(out_dir, "runs"))
    if not runs:
        raise SystemExit(f"error: {out_dir}/runs: no finished runs to report (scripts/reproduce.py puts them there)")

    check_one_precision_per_cell(runs)
    check_one_dataset_per_file(runs)
    scale = SCALES.get(args.scale)
    budget = scale.budget_steps if scale else None
    datasets = scale.datasets if scale else DATASETS
    # a scale with a step budget B has three readings of its runs; one without (the paper's) has two; cpu-wide adds
    # equal steps before B and the plateau
    readings = ["equal steps", "equal epochs", "best checkpoint"] if budget else ["final", "best checkpoint"]
    if scale and budget:
        readings = [equal_steps_at(steps) for steps in scale.early_steps] + readings
        if scale.plateau:
            readings.insert(-1, "plateau")
    comparisons = COMPARISONS + ((("csac", "bc"),) if scale and scale.plateau else ())
    cells = {name: cell_values(runs, name, budget) for name in readings}
    full = max(len(v) for v in cells[readings[0]].values())
    flags = f"`{' '.join(scale.flags)}`" if scale and scale.flags else "none (the scripts' defaults: the paper's)"
    if scale and budget:
        flags += (f"; B = {budget:,} gradient steps for BC and CSAC, "
                  + ", ".join(f"{m}B for {LABELS[a]}" for a, m in scale.multipliers.items()))
    precisions = sorted({precision(r) for r in runs})
    commits = sorted({c["commit"][:10] + ("+dirty" if c["dirty"] else "") for r in runs for c in r.get("code", [])
                      if c.get("commit")})
    data = sorted({f"`{name}` {digest[:12]}" for r in runs for name, digest in (r.get("data") or {}).items()})

    def section(name: str) -> list[str]:
        return [f"## {name[0].upper()}{name[1:]}: {READINGS[name]}", "",
                *table_rows(cell_stats(cells[name], datasets), full, datasets), ""]

    main_reading = "equal steps" if "equal steps" in readings else readings[0]
    lines = [f"# Table 1, scale `{args.scale}`", "",
             f"Mean ± std over seeds (up to {full} per cell; a cell with fewer says how many) of each run's evaluation "
             f"return, every evaluation 10 episodes per task unless the flags say otherwise. Made by "
             f"`python scripts/reproduce.py --scale {args.scale}` then `python scripts/report.py --scale {args.scale}`.",
             "", f"Scale flags: {flags}; precision {', '.join(precisions)}.", "",
             f"Code: commit(s) {', '.join(commits) or 'not recorded'}. Data (sha256): {', '.join(data) or 'not recorded'}.",
             "", f"CPUs: {machines(runs)}.", "", *([f"GPUs: {gpus(runs)}.", ""] if gpus(runs) else []),
             *section(main_reading),
             "## The seed report's Table 1 (5 seeds, its own datasets, 1000 epochs at the paper's size, best checkpoint)",
             "", *table_rows(SEED_TABLE, datasets=datasets), ""]
    for name in readings:
        if name != main_reading:
            lines += section(name)
    if "plateau" in readings:
        lines += ["## Has it levelled off?", "",
                  f"An algorithm has levelled off on a dataset when the mean return over its runs' last quarter of "
                  f"evaluations is at most {LEVELLED_OFF:.0%} above their mean over the quarter before (pooled over "
                  f"runs x tasks); otherwise its plateau reading is a lower bound of its level.", "",
                  *plateau_rows(runs, datasets), ""]
    estimates = {name: interval_estimates(cells[name], datasets) for name in readings}
    lines += ["## Interval estimates", "",
              "IQM (interquartile mean) of all runs x tasks of each algorithm and dataset, with its 95% stratified "
              "bootstrap interval (runs resampled within each task, 10,000 resamples, seeded; Agarwal et al., "
              "NeurIPS 2021); raw returns pooled over walk and run as the report's average row pools them, so the "
              f"interval reflects both tasks' seeds; none where a task has fewer than {MIN_RUNS} runs (a resample of one "
              f"run is that run: a zero-width interval). `intervals.png` plots them.", "",
              *iqm_rows(estimates, datasets), ""]
    for name in readings:
        if name == "best checkpoint":  # not a reading to test claims with
            continue
        lines += [f"Probability of improvement, {name}: P(X > Y) for a random run of X and one of Y on the task (ties "
                  f"count 1/2), with its 95% bootstrap interval; 0.5 is no difference.", "",
                  *improvement_rows(cells[name], datasets, comparisons), ""]
    other_runs = load_runs(os.path.join(args.results_dir, scale.beside, "runs")) if scale and scale.beside else []
    if other_runs:
        other_scale = SCALES[scale.beside]
        names = [f"equal steps at {s:,}" for s in (*scale.early_steps, budget)] + ["plateau", "best checkpoint"]
        lines += [f"## Beside the `{scale.beside}` scale: {networks(runs)} here, {networks(other_runs)} there", "",
                  f"Each cell: the mean over seeds of this scale's runs / of the `{scale.beside}` scale's runs "
                  f"(`results/{scale.beside}/runs`; the number of seeds in brackets where fewer than 3). Equal steps: "
                  f"both evaluated at that step. Plateau and best checkpoint: each at the end of its own budget "
                  f"(B = {budget:,} here, {other_scale.budget_steps:,} there; 2B for the multi-task agents). Last, the "
                  f"seed report's Table 1 (best checkpoint, 5 seeds, 1000 epochs at batch 1024; its CSAC 3x256, its "
                  f"MTCSAC and HCSAC 3x1024).", "",
                  *beside_rows(runs, other_runs, names, datasets), ""]
    lines += ["## Cost of each run", "", *run_costs(runs), ""]
    atomic_write_bytes(os.path.join(out_dir, "table1.md"), "\n".join(lines).encode())
    plot(curves(runs), os.path.join(out_dir, "figure4.png"), f"Evaluation return vs gradient steps, scale {args.scale}",
         budget, datasets)
    plot_intervals(estimates, os.path.join(out_dir, "intervals.png"), f"IQM with 95% CI, scale {args.scale}", datasets)
    print(f"wrote {out_dir}/table1.md, figure4.png and intervals.png from {len(runs)} runs")


if __name__ == "__main__":
    main(tyro.cli(Args))
