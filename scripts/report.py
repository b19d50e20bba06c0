"""Table 1 and Figure 4 from the grid's runs: results/<scale>/table1.md and results/<scale>/figure4.png.

Reads only results/<scale>/runs/*.json, the finished runs' results.json files that scripts/reproduce.py
copies there: each holds the run's arguments, code version, every evaluation (epoch, step, returns) and final
numbers, so the committed table and figure can be remade from what is committed.

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


def cell_values(runs: list[dict], last: int = 1) -> dict[tuple[str, str, str], list[float]]:
    """(dataset, task, algorithm) -> per seed, the final evaluation's mean return, or with `last` > 1 the mean
    of the last `last` evaluations (one evaluation of 10 episodes is noisy: a walker that falls scores ~20)."""
    cells = defaultdict(list)
    for results in runs:
        for task, entry in results["tasks"].items():
            value = np.mean([evaluation["mean"] for evaluation in entry["history"][-last:]])  # the last is the final
            cells[(results["args"]["dataset"], task, results["algorithm"])].append(float(value))
    return cells


def cell_stats(cells: dict) -> dict[tuple[str, str], dict[str, tuple | None]]:
    """(dataset, task) -> algorithm -> (mean, std, seeds) over seeds, None where no run finished."""
    return {(d, t): {a: (float(np.mean(cells[(d, t, a)])), float(np.std(cells[(d, t, a)])), len(cells[(d, t, a)]))
                     if cells.get((d, t, a)) else None for a in ALGORITHMS} for d in DATASETS for t in TASKS}


def table_rows(stats: dict[tuple[str, str], dict[str, tuple | None]], full: int | None = None) -> list[str]:
    """Markdown rows in the seed's layout from (mean, std[, seeds]) per cell; the per-dataset average (unless
    given) is the mean of the two tasks' means and of their stds, as in the seed's table; the best mean of each
    row in bold; '–' where a run is missing; a cell with fewer seeds than `full` says how many."""
    lines = ["| Dataset | Task | " + " | ".join(LABELS[a] for a in ALGORITHMS) + " |", "|---|---|" + "---|" * len(ALGORITHMS)]
    for dataset in DATASETS:
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
    lines = ["| run | seeds | epochs | gradient steps | wall time (min) |", "|---|---|---|---|---|"]
    groups = defaultdict(list)
    for results in runs:
        task = results["args"].get("task") if results["algorithm"] in SINGLE_TASK else None
        groups[(results["algorithm"], results["args"]["dataset"], task)].append(results)
    for (algorithm, dataset, task), members in sorted(groups.items(), key=lambda kv: (ALGORITHMS.index(kv[0][0]), kv[0][1:])):
        steps = sorted({r["gradient_steps"] for r in members})
        epochs = sorted({r["args"]["epochs"] for r in members})
        minutes = np.mean([r["wall_time_s"] for r in members]) / 60
        name = f"{LABELS[algorithm]} {dataset}" + (f" {task}" if task else " (both tasks)")
        lines.append(f"| {name} | {len(members)} | {', '.join(map(str, epochs))} | {', '.join(map(str, steps))} "
                     f"| {minutes:.1f} |")
    hours = sum(r["wall_time_s"] for r in runs) / 3600
    lines += ["", f"All {len(runs)} runs: {hours:.1f} hours of wall time in total (each run one process; with one torch "
              "thread each, about as many core-hours)."]
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


def plot(curve_data, path: str, title: str) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), squeeze=False)
    for col, dataset in enumerate(DATASETS):
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
            ax.set_title(f"walker {task}, {dataset}")
            ax.set_xlabel("gradient steps")
            ax.set_ylabel("evaluation return")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=120, format="png")
    atomic_write_bytes(path, image.getvalue())
    plt.close(fig)


def main(args: Args) -> None:
    out_dir = os.path.join(args.results_dir, args.scale)
    runs = load_runs(os.path.join(out_dir, "runs"))
    if not runs:
        raise SystemExit(f"error: {out_dir}/runs: no finished runs to report (scripts/reproduce.py puts them there)")

    check_one_precision_per_cell(runs)
    cells = cell_values(runs)
    ours = cell_stats(cells)
    full = max(len(v) for v in cells.values())
    scale = SCALES.get(args.scale)
    flags = f"`{' '.join(scale.flags)}`" if scale and scale.flags else "none (the scripts' defaults: the paper's)"
    precisions = sorted({precision(r) for r in runs})
    commits = sorted({c["commit"][:10] + ("+dirty" if c["dirty"] else "") for r in runs for c in r.get("code", [])
                      if c.get("commit")})
    lines = [f"# Table 1, scale `{args.scale}`", "",
             f"Final evaluation return (mean ± std over seeds of each run's last evaluation, up to {full} seed(s) per "
             f"cell; a cell with fewer says how many); every evaluation is 10 episodes per task unless the flags say otherwise. Made by "
             f"`python scripts/reproduce.py --scale {args.scale}` then `python scripts/report.py --scale {args.scale}`.",
             "", f"Scale flags: {flags}; precision {', '.join(precisions)}.", "", f"Code: commit(s) {', '.join(commits) or 'not recorded'}.", "",
             *table_rows(ours, full), "",
             "## The seed report's Table 1 (5 seeds, its own datasets, 1000 epochs at the paper's size)", "",
             *table_rows(SEED_TABLE), "",
             "## Ours again, each run's mean over its last three evaluations", "",
             "The same runs as the first table; per run the mean of its last three evaluations (30 episodes per task "
             "instead of 10, over the last ~20% of the budget at the cpu scale), then mean ± std over seeds: less "
             "noisy than one final evaluation.", "",
             *table_rows(cell_stats(cell_values(runs, last=3)), full), "",
             "## Cost of each run", "", *run_costs(runs), ""]
    atomic_write_bytes(os.path.join(out_dir, "table1.md"), "\n".join(lines).encode())
    plot(curves(runs), os.path.join(out_dir, "figure4.png"), f"Evaluation return vs gradient steps, scale {args.scale}")
    print(f"wrote {out_dir}/table1.md and figure4.png from {len(runs)} runs")


if __name__ == "__main__":
    main(tyro.cli(Args))
