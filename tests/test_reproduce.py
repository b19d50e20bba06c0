"""The experiment grid and its report on the tiny scale: every cell filled, a figure, resumability."""

import json
import os
import shutil
import sys

import pytest
import torch

from conftest import copy_grid, run_script

import reproduce  # noqa: E402  (scripts/ is on sys.path through conftest)


def test_grid_and_report(tiny_grid, tiny_data_dir, tmp_path):
    grid_dir, grid_stdout = tiny_grid
    assert "12 runs in the tiny grid, 0 already finished, 12 to do" in grid_stdout
    copy_grid(grid_dir, tmp_path)
    results = tmp_path / "results"
    assert len(os.listdir(results / "tiny" / "runs")) == 12  # each finished run copied, ready to commit

    result = run_script("scripts/report.py", "--scale", "tiny", "--results-dir", str(results), cwd=tmp_path, fresh=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # a fresh interpreter prints nothing else (the other tests' runs are forked)
    table = (results / "tiny" / "table1.md").read_text()
    ours = table.split("## The seed report")[0]
    rows = [line for line in ours.splitlines() if line.startswith("| medium")]
    assert len(rows) == 6  # 2 datasets x (walk, run, average)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][2:]
        assert len(cells) == 4 and all("(1 seed)" in c for c in cells), row
    # the numbers are the runs' own final evaluations, and each run's file has its whole evaluation history
    with open(results / "tiny" / "runs" / "csac__medium__walk__s0.json") as f:
        csac_walk = json.load(f)
    walk = csac_walk["tasks"]["walk"]
    assert f"{walk['final']['mean']:.2f} (1 seed)" in rows[0]
    assert [e["epoch"] for e in walk["history"]] == [1, 2] and walk["history"][-1]["mean"] == walk["final"]["mean"]
    assert csac_walk["code"][0]["commit"] is None or len(csac_walk["code"][0]["commit"]) == 40
    assert (results / "tiny" / "figure4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # (the same grid under the Ray launcher gives the same numbers: test_faults' Ray test, against this grid)

    # Started again, the grid redoes nothing: a run counts as done when its results are in results/ (committed),
    # even where its run folder is gone; with one result removed from both places, only that run is redone.
    os.remove(tmp_path / "runs" / "tiny" / "bc__medium__walk__s0" / "results.json")
    os.remove(results / "tiny" / "runs" / "bc__medium__run__s0.json")
    os.remove(tmp_path / "runs" / "tiny" / "bc__medium__run__s0" / "results.json")
    os.remove(tmp_path / "runs" / "tiny" / "bc__medium__run__s0" / "checkpoint.pt")
    grid = ["--scale", "tiny", "--seeds", "0", "--workers", "2", "--data-dir", tiny_data_dir, "--workdir", str(tmp_path),
            "--results-dir", str(results)]
    result = run_script("scripts/reproduce.py", *grid, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "11 already finished, 1 to do" in result.stdout and "bc__medium__run__s0: done" in result.stdout


def test_cpu_scale_is_the_scripts_own_definition_with_twice_the_steps_for_the_multi_task_agents(tmp_path):
    """reproduce.py passes --scale cpu and copies none of its flags (each script resolves it, test_progress), but
    the step budget: B for BC and CSAC, 2B for MTCSAC and HCSAC (their epoch covers both tasks), and bf16 pinned."""
    import bc
    import csac
    import hcsac
    import mtcsac

    scale = reproduce.SCALES["cpu"]
    assert scale.flags == ("--scale", "cpu") and scale.precision == "bf16"
    assert all(module.CPU_SCALE_STEPS == scale.budget_steps for module in (bc, csac, mtcsac, hcsac))
    args = reproduce.Args(scale="cpu", workdir="/nonexistent", results_dir=str(tmp_path))  # no parked run there
    for algorithm, task, steps in (("bc", "run", 40_000), ("csac", "walk", 40_000), ("mtcsac", None, 80_000),
                                   ("hcsac", None, 80_000)):
        command = reproduce.command(reproduce.Run(algorithm, "medium", 0, task), args)
        assert command[-5:] == ["--scale", "cpu", "--max-steps", str(steps), "--bf16"] and "--hidden-dim" not in command


def test_a_run_with_a_checkpoint_is_resumed_on_the_grids_data_folder(tmp_path):
    """A checkpoint keeps the data folder of the checkout that made it; the grid passes its own (the run checks the
    files' sha256), so a parked run resumes from a checkout at another path."""
    run = reproduce.Run("csac", "medium", 0, "walk")
    args = reproduce.Args(scale="cpu", workdir=str(tmp_path), data_dir=str(tmp_path / "data"))
    (tmp_path / "runs" / "cpu" / run.name).mkdir(parents=True)
    (tmp_path / "runs" / "cpu" / run.name / "checkpoint.pt").write_bytes(b"")
    assert reproduce.command(run, args)[1:] == [os.path.join(reproduce.ROOT, "csac.py"), "--resume",
                                                os.path.join("runs", "cpu", run.name), "--data-dir", args.data_dir]


def test_the_grid_refuses_bf16_runs_on_a_cpu_that_only_emulates_bf16(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "native_cpu_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = reproduce.Args(scale="cpu", seeds=[0], algorithms=["bc"], datasets=["medium"], results_dir=str(tmp_path),
                          workdir=str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        reproduce.main(args)
    assert "the cpu scale pins bf16 and this CPU" in str(stop.value) and "no native bf16" in str(stop.value)
    assert not (tmp_path / "runs").exists()  # nothing started
    reproduce.main(reproduce.Args(**{**vars(args), "dry_run": True}))  # the commands are still shown
    assert "bc.py" in capsys.readouterr().out
    monkeypatch.setattr(reproduce, "native_cpu_bf16", lambda: True)
    assert reproduce.emulated_bf16_fault(args) is None
    assert reproduce.emulated_bf16_fault(reproduce.Args(**{**vars(args), "gpus_per_run": 0.25})) is None


def test_dry_run_into_a_pipe_closed_early_ends_without_a_traceback(tmp_path):
    """`reproduce.py --dry-run | head -1`: the reader closes the pipe after one line; the grid stops quietly."""
    import subprocess

    command = [sys.executable, os.path.join(os.path.dirname(reproduce.__file__), "reproduce.py"), "--scale", "tiny",
               "--dry-run", "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path) as process:
        first = process.stdout.readline()
        process.stdout.close()  # as head does after its line
        error = process.stderr.read().decode()
    assert b"runs in the tiny grid" in first
    assert process.returncode == 0 and error == ""


def test_a_run_made_on_other_data_is_not_counted(tiny_grid, tiny_data_dir, tmp_path):
    """One table never mixes datasets: a committed results file counts only if its recorded sha256 of each data
    file matches today's file; otherwise the grid says why and redoes the run."""
    import hashlib

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data_dir)
    grid = ["--scale", "tiny", "--seeds", "0", "--algorithms", "bc", "--datasets", "medium", "--workers", "1",
            "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path)]
    copy_grid(tiny_grid[0], tmp_path)  # the grid's runs, made on these files (a copy of tiny_data_dir)
    committed = tmp_path / "results" / "tiny" / "runs" / "bc__medium__walk__s0.json"
    recorded = json.loads(committed.read_text())["data"]
    assert recorded == {"walker_walk_medium.npz": hashlib.sha256((data_dir / "walker_walk_medium.npz").read_bytes()).hexdigest()}
    result = run_script("scripts/reproduce.py", *grid, "--dry-run", cwd=tmp_path)
    assert "2 already finished, 0 to do" in result.stdout
    shutil.copy(data_dir / "walker_walk_medium-replay.npz", data_dir / "walker_walk_medium.npz")  # new walk data
    result = run_script("scripts/reproduce.py", *grid, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{committed}: not counted: it trained on another walker_walk_medium.npz" in result.stdout
    assert "1 already finished, 1 to do" in result.stdout and "kept aside as checkpoint.pt.other-data" in result.stdout
    assert json.loads(committed.read_text())["data"]["walker_walk_medium.npz"] == \
        hashlib.sha256((data_dir / "walker_walk_medium.npz").read_bytes()).hexdigest()


def test_report_refuses_a_cell_of_mixed_precision(tmp_path):
    def run(seed: int, precision: str | None, bf16: bool) -> dict:
        history = [{"epoch": 1, "step": 40_000, "train_seconds": 1.0, "mean": 100.0 + seed, "returns": [100.0]}]
        return {"algorithm": "csac", "run_name": f"cpu/csac__medium__walk__s{seed}", "gradient_steps": 40_000,
                "wall_time_s": 1.0, **({"precision": precision} if precision else {}),
                "args": {"dataset": "medium", "task": "walk", "bf16": bf16, "epochs": 1},
                "tasks": {"walk": {"history": history, "final": {"epoch": 1, "mean": 100.0 + seed}}}}
    runs = tmp_path / "results" / "cpu" / "runs"
    runs.mkdir(parents=True)
    (runs / "a.json").write_text(json.dumps(run(0, None, True)))  # an older file: bf16 by its flag
    (runs / "b.json").write_text(json.dumps(run(1, "bf16", True)))
    ok = run_script("scripts/report.py", "--scale", "cpu", "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "precision bf16." in (tmp_path / "results" / "cpu" / "table1.md").read_text()
    (runs / "c.json").write_text(json.dumps(run(2, "fp32", False)))
    mixed = run_script("scripts/report.py", "--scale", "cpu", "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert mixed.returncode == 1 and "Traceback" not in mixed.stderr and mixed.stderr.count("\n") == 1
    assert "the cell csac medium walk mixes precisions (bf16: cpu/csac__medium__walk__s0, cpu/csac__medium__walk__s1; " \
           "fp32: cpu/csac__medium__walk__s2)" in mixed.stderr


def test_report_names_every_cpu_the_runs_trained_on():
    import report

    xeon = {"model": "Xeon", "capability": "AVX512", "native_bf16": True}
    zen3 = {"model": "EPYC", "capability": "AVX2", "native_bf16": False}
    runs = [{"cpus": [zen3, xeon], "code": [{}, {}]},  # resumed on another machine: both count
            {"cpus": [xeon, xeon], "code": [{}, {}]},  # resumed on the same one: once
            {"cpu": xeon, "code": [{}, {}]},  # older results: the machine that finished it alone
            {"cpus": [None, zen3], "code": [{}, {}]},  # resumed from an older checkpoint
            {"cpu": zen3, "code": [{}]}]
    assert report.machines(runs) == ("EPYC (AVX2, emulated bf16): 3 runs; Xeon (AVX512, native bf16): 3 runs "
                                     "(2 resumed runs name only some of the machines used: a process from before "
                                     "`cpus` was recorded)")
    assert report.machines([{"code": [{}]}]) == "not recorded"
    one, two = ({**xeon, "threads": n} for n in (1, 2))  # newer results name the torch threads too
    assert report.machines([{"cpus": [one], "code": [{}]}, {"cpus": [two, one], "code": [{}, {}]}]) == \
        "Xeon (AVX512, native bf16, 1 thread): 2 runs; Xeon (AVX512, native bf16, 2 threads): 1 run"
    # newest results tell a Zen 4 from a Zen 5 (both "AMD EPYC") and name AMX
    zen4, zen5 = ({"model": "AMD EPYC", "capability": "AVX512", "native_bf16": True, "threads": 2,
                   "family_model": family_model, "amx": False} for family_model in ("25/17", "26/2"))
    amx = {**one, "family_model": "6/143", "amx": True}
    assert report.machines([{"cpus": [zen4, zen5], "code": [{}, {}]}, {"cpus": [amx], "code": [{}]}]) == (
        "AMD EPYC (family/model 25/17, AVX512, native bf16, 2 threads): 1 run; "
        "AMD EPYC (family/model 26/2, AVX512, native bf16, 2 threads): 1 run; "
        "Xeon (family/model 6/143, AVX512 + AMX, native bf16, 1 thread): 1 run")


def test_report_marks_missing_runs(tiny_grid, tmp_path):
    """Only bc's medium runs committed: its cells filled, every other cell "–", never zero."""
    grid_dir, _ = tiny_grid
    runs = tmp_path / "results" / "tiny" / "runs"
    runs.mkdir(parents=True)
    for name in ("bc__medium__walk__s0.json", "bc__medium__run__s0.json"):
        shutil.copy(grid_dir / "results" / "tiny" / "runs" / name, runs / name)
    result = run_script("scripts/report.py", "--scale", "tiny", "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ours = (tmp_path / "results" / "tiny" / "table1.md").read_text().split("## The seed report")[0]
    walk = next(line for line in ours.splitlines() if line.startswith("| medium | walk"))
    assert walk.count("–") == 3 and "(1 seed)" in walk  # BC filled, the three others missing, never zero
    replay = next(line for line in ours.splitlines() if line.startswith("| medium-replay | walk"))
    assert replay.count("–") == 4


def test_report_writes_no_interval_from_one_run_per_task():
    """One seed: the IQM and P(X > Y) as point values, marked as having no interval (a bootstrap of one run is
    that run again, a zero-width interval); two seeds: intervals."""
    import report

    one = {("medium", "walk", "csac"): [100.0], ("medium", "run", "csac"): [50.0],
           ("medium", "walk", "mtcsac"): [120.0, 80.0], ("medium", "run", "mtcsac"): [60.0, 70.0]}
    estimates = report.interval_estimates(one)
    assert estimates[("medium", "csac")] == (75.0, None, None, 1)
    value, low, high, fewest = estimates[("medium", "mtcsac")]
    assert (value, fewest) == (75.0, 2) and low <= value <= high and low < high
    row = next(line for line in report.iqm_rows({"equal steps": estimates}) if "| medium |" in line)
    assert "| 75.0 (1 run per task: no interval) | 75.0 [" in row
    walk = next(line for line in report.improvement_rows(one) if line.startswith("| medium | walk"))
    assert "| 0.50 (2 vs 1 runs: no interval) |" in walk  # MTCSAC's 120 and 80 against CSAC's 100


def test_preempted_runs_are_resumed_later_not_failed(tmp_path, monkeypatch, capsys):
    """A run that exits with 75 (SIGTERM or Ctrl-C, checkpoint written) is reported as 'to resume' and the grid
    exits with 75 too, so that a scheduler requeues it."""
    monkeypatch.setattr(reproduce, "command", lambda run, args: [sys.executable, "-c", "import sys; sys.exit(75)"])
    args = reproduce.Args(scale="tiny", seeds=[0], workers=1, algorithms=["bc"], datasets=["medium"],
                          workdir=str(tmp_path), results_dir=str(tmp_path / "results"))
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(args)
    out = capsys.readouterr().out
    assert exit_info.value.code == 75 and "0 failed, 2 to resume" in out
    assert "bc__medium__walk__s0: stopped (the same command resumes it from its checkpoint)" in out
    assert not (tmp_path / "results" / "tiny" / "runs").exists()  # nothing copied as finished


def test_table_cells_say_how_many_seeds():
    import report

    row = {"bc": (500.0, 10.0, 3), "csac": (400.0, 0.0, 1), "mtcsac": (450.0, 5.0, 2), "hcsac": None}
    stats = {(d, t): dict(row) for d in reproduce.DATASETS for t in reproduce.TASKS}
    walk = report.table_rows(stats, full=3)[2]
    assert walk == "| medium | walk | **500.00 ± 10.00** | 400.00 (1 seed) | 450.00 ± 5.00 (2 seeds) | – |"


def test_cells_from_the_final_or_the_last_evaluations():
    """The table's cells: per seed the final evaluation, or the mean of the last three; the total wall time."""
    import report

    def run(seed_returns, seconds):
        history = [{"step": 1000 * (i + 1), "mean": r} for i, r in enumerate(seed_returns)]
        return {"algorithm": "csac", "args": {"dataset": "medium", "task": "walk", "epochs": 4},
                "gradient_steps": 4000, "wall_time_s": seconds,
                "tasks": {"walk": {"history": history, "final": {"epoch": 4, "mean": seed_returns[-1]}}}}

    runs = [run([10, 100, 200, 600], 1800), run([20, 300, 400, 200], 5400)]
    assert report.cell_values(runs)[("medium", "walk", "csac")] == [600, 200]
    assert report.cell_values(runs, last=3)[("medium", "walk", "csac")] == [300, 300]
    stats = report.cell_stats(report.cell_values(runs))
    assert stats[("medium", "walk")]["csac"] == (400.0, 200.0, 2) and stats[("medium", "walk")]["bc"] is None
    assert report.run_costs(runs)[-1].startswith("All 2 runs: 2.0 hours of wall time")


def test_learning_curves_of_a_folder_of_runs(tmp_path):
    """calibration.py on a folder: per run its curve, per variant (seeds pooled) the final mean, the mean of the
    last three evaluations and the first evaluation >= 300 with its training minutes, 'never' where none reached it."""
    import calibration

    def run(returns):
        history = [{"step": 1000 * (i + 1), "train_seconds": 60.0 * (i + 1), "mean": r} for i, r in enumerate(returns)]
        return {"tasks": {"walk": {"history": history}}}

    for name, returns in [("csac_walk_medium_2x256_s0", [10, 100, 320, 400]), ("csac_walk_medium_2x256_s1", [50, 150, 200])]:
        (tmp_path / f"{name}.json").write_text(json.dumps(run(returns)))
    calibration.main(str(tmp_path))
    assert (tmp_path / "curves.png").stat().st_size > 0
    text = (tmp_path / "curves.md").read_text()
    assert "| csac_walk_medium_2x256_s0 (walk) | 1.0k: 10, 2.0k: 100, 3.0k: 320, 4.0k: 400 | 400.0 | 4.0 |" in text
    assert "| csac_walk_medium_2x256 (walk) | 2 | 300 (400, 200) | 203 (273, 133) |" in text
    assert text.rstrip().endswith("| – | 3.0k (3.0 min), never |")  # no evaluation from 10k steps: no such mean


def synthetic_run(algorithm: str, seed: int, curve: dict[str, list[tuple[int, float]]], data: str = "a" * 64) -> dict:
    """A results.json as the scripts write it, with the evaluations (step, mean) given per task."""
    tasks = {task: {"history": [{"epoch": i + 1, "step": step, "train_seconds": 1.0, "mean": mean, "returns": [mean]}
                                for i, (step, mean) in enumerate(points)]} for task, points in curve.items()}
    for entry in tasks.values():
        entry["final"] = {**entry["history"][-1]}
    task = next(iter(curve)) if algorithm in reproduce.SINGLE_TASK else None
    name = reproduce.Run(algorithm, "medium", seed, task).name
    return {"algorithm": algorithm, "run_name": f"cpu/{name}", "gradient_steps": max(s for p in curve.values() for s, _ in p),
            "wall_time_s": 60.0, "precision": "bf16", "args": {"dataset": "medium", "task": task or "walk", "epochs": 1},
            "data": {f"walker_{t}_medium.npz": data for t in curve}, "tasks": tasks}


def test_report_reads_equal_steps_equal_epochs_and_best_from_the_same_runs(tmp_path):
    """At B = 40,000 (the cpu scale): CSAC's final is its equal-steps and equal-epochs value; MTCSAC's evaluation
    at step B is its equal-steps value and its final (2B) its equal-epochs value; the best is the maximum."""
    import report

    runs_dir = tmp_path / "results" / "cpu" / "runs"
    runs_dir.mkdir(parents=True)
    for seed in range(3):
        csac_run = synthetic_run("csac", seed, {"walk": [(3000, 900.0 + seed), (40_000, 100.0 + seed)]})
        mtcsac_run = synthetic_run("mtcsac", seed, {task: [(40_000, 200.0 + seed + offset), (80_000, 300.0 + seed + offset)]
                                                    for task, offset in (("walk", 0), ("run", 10))})
        for results in (csac_run, mtcsac_run):
            (runs_dir / f"{results['run_name'].split('/')[1]}.json").write_text(json.dumps(results))
    report.main(report.Args(scale="cpu", results_dir=str(tmp_path / "results")))
    table = (tmp_path / "results" / "cpu" / "table1.md").read_text()
    sections = {part.split("\n")[0].split(":")[0]: part for part in table.split("## ")[1:]}

    def walk_row(section: str) -> list[str]:
        row = next(line for line in sections[section].splitlines() if line.startswith("| medium | walk"))
        return [cell.strip() for cell in row.strip("|").split("|")][2:]

    assert walk_row("Equal steps") == ["–", "101.00 ± 0.82", "**201.00 ± 0.82**", "–"]
    assert walk_row("Equal epochs") == ["–", "101.00 ± 0.82", "**301.00 ± 0.82**", "–"]
    assert walk_row("Best checkpoint") == ["–", "**901.00 ± 0.82**", "301.00 ± 0.82", "–"]
    # MTCSAC's IQM at equal steps pools walk 200-202 and run 210-212: the middle four of six, 206.0
    iqm_row = next(line for line in sections["Interval estimates"].splitlines() if line.startswith("| equal steps | medium |"))
    assert "| 206.0 [" in iqm_row
    assert "P(MTCSAC > CSAC)" in table and (tmp_path / "results" / "cpu" / "intervals.png").stat().st_size > 0

    # a multi-task run without an evaluation at exactly step B cannot give the equal-steps reading
    late = synthetic_run("mtcsac", 0, {task: [(40_065, 200.0), (80_000, 300.0)] for task in ("walk", "run")})
    (runs_dir / "mtcsac__medium__s0.json").write_text(json.dumps(late))
    result = run_script("scripts/report.py", "--scale", "cpu", "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "cpu/mtcsac__medium__s0: no evaluation of walk at step 40000" in result.stderr

    # runs that read different versions of one data file are not one table
    (runs_dir / "mtcsac__medium__s0.json").write_text(json.dumps(synthetic_run(
        "mtcsac", 0, {task: [(40_000, 200.0), (80_000, 300.0)] for task in ("walk", "run")}, data="b" * 64)))
    result = run_script("scripts/report.py", "--scale", "cpu", "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert result.returncode == 1 and "the runs read different versions of walker_run_medium.npz (aaaaaaaaaaaa: " \
        "cpu/mtcsac__medium__s1, cpu/mtcsac__medium__s2; bbbbbbbbbbbb: cpu/mtcsac__medium__s0)" in result.stderr


def test_cpu_wide_scale_gives_every_algorithm_the_reports_network_and_its_epochs_from_the_data(tiny_data_dir, tmp_path):
    """cpu-wide: 3x1024 at batch 256 for all four, B = 16,000 (2B for the multi-task agents), bf16, an evaluation
    every 1,000 steps; --epochs and hcsac's --relabel-every from the data's size (the tests' files: 1,000 rows a
    task, 3 gradient steps an epoch alone, 7 together), about 10 relabelings per B."""
    # results of their own: a run parked in the repository's results/ would be resumed, not started
    args = reproduce.Args(scale="cpu-wide", workdir="/nonexistent", data_dir=tiny_data_dir,
                          results_dir=str(tmp_path / "results"))
    assert [run.name for run in reproduce.grid(args)][:6] == [
        "bc__medium__walk__s0", "bc__medium__run__s0", "csac__medium__walk__s0", "csac__medium__run__s0",
        "mtcsac__medium__s0", "hcsac__medium__s0"] and len(reproduce.grid(args)) == 18  # medium only, seed by seed

    def flags(algorithm, task):
        command = reproduce.command(reproduce.Run(algorithm, "medium", 0, task), args)
        return dict(zip(command[::1], command[1:])), command[-1]

    for algorithm, task, steps, epochs in (("bc", "walk", 16_000, 5334), ("csac", "run", 16_000, 5334),
                                           ("mtcsac", None, 32_000, 4572), ("hcsac", None, 32_000, 4572)):
        given, last = flags(algorithm, task)
        assert (given["--hidden-dim"], given["--num-layers"], given["--batch-size"]) == ("1024", "3", "256")
        assert given["--max-steps"] == str(steps) and given["--epochs"] == str(epochs) and last == "--bf16"
        assert given["--eval-every-steps"] == "1000" and ("--relabel-every" in given) == (algorithm == "hcsac")
    assert flags("hcsac", None)[0]["--relabel-every"] == str(round(16_000 / 7 / 10))  # 2286 epochs of 7 steps = B


def test_a_stopped_run_is_parked_in_pieces_and_a_fresh_checkout_resumes_from_it(tmp_path, monkeypatch, capsys):
    """A checkpoint too large for one committed file goes to results/<scale>/in-progress/<run>/ in pieces with its
    sha256; a grid in another checkout puts it back (unless its own is as far); a torn park is ignored in one line;
    a finished run's park is removed."""
    monkeypatch.setattr(reproduce, "PARK_PIECE_BYTES", 1000)
    run = reproduce.Run("csac", "medium", 0, "walk")
    first = reproduce.Args(scale="tiny", workdir=str(tmp_path / "first"), results_dir=str(tmp_path / "results"))
    run_dir = tmp_path / "first" / "runs" / "tiny" / run.name
    run_dir.mkdir(parents=True)
    torch.save({"learner": {"w": torch.arange(1000.0)}, "global_step": 7}, run_dir / "checkpoint.pt")
    assert reproduce.park(run, first)
    parked = tmp_path / "results" / "tiny" / "in-progress" / run.name
    pieces = sorted(p.name for p in parked.iterdir())
    assert len(pieces) > 3 and pieces[-1] == "checkpoint.pt.sha256"
    assert all((parked / p).stat().st_size <= 1000 for p in pieces)

    second = reproduce.Args(scale="tiny", workdir=str(tmp_path / "second"), results_dir=str(tmp_path / "results"))
    assert reproduce.command(run, second)[2] == "--resume"  # shown as a resume before it is put back
    fresh_dir = tmp_path / "second" / "runs" / "tiny" / run.name
    fresh_dir.mkdir(parents=True)
    reproduce.unpark(run, second, str(fresh_dir))
    assert (fresh_dir / "checkpoint.pt").read_bytes() == (run_dir / "checkpoint.pt").read_bytes()
    assert "resumes from its parked checkpoint" in capsys.readouterr().out

    torch.save({"learner": {}, "global_step": 9}, fresh_dir / "checkpoint.pt")  # this checkout went further
    reproduce.unpark(run, second, str(fresh_dir))
    assert torch.load(fresh_dir / "checkpoint.pt")["global_step"] == 9

    (parked / "checkpoint.pt.001").write_bytes(b"torn")
    (fresh_dir / "checkpoint.pt").unlink()
    reproduce.unpark(run, second, str(fresh_dir))
    assert "do not match their sha256" in capsys.readouterr().out and not (fresh_dir / "checkpoint.pt").exists()

    monkeypatch.setattr(reproduce, "results_fault", lambda *a, **k: None)  # as if the run had finished
    monkeypatch.setattr(reproduce, "data_fault", lambda *a, **k: None)
    (run_dir / "results.json").write_text("{}")
    assert reproduce.is_finished(run, first) and not parked.exists()


def test_cpu_wide_report_reads_equal_steps_at_8k_and_16k_the_plateau_and_csac_against_bc(tmp_path):
    """cpu-wide (B = 16,000, medium only): equal steps at 8,000 and at B, equal epochs (2B for the multi-task
    agents), the plateau (mean of the last quarter of evaluations) with its levelled-off verdict, and P(CSAC > BC)."""
    import report

    runs_dir = tmp_path / "results" / "cpu-wide" / "runs"
    runs_dir.mkdir(parents=True)

    def flat_then(level, steps):  # rising to `level` by half-way, flat after: levelled off
        return [(s, min(level, level * s / (steps / 2))) for s in range(1000, steps + 1, 1000)]

    def rising(slope, steps):  # still rising at the end
        return [(s, slope * s / 1000) for s in range(1000, steps + 1, 1000)]

    for seed in range(3):
        files = [synthetic_run("bc", seed, {task: flat_then(500.0 + seed, 16_000)}) for task in ("walk", "run")]
        files += [synthetic_run("csac", seed, {task: rising(40.0, 16_000)}) for task in ("walk", "run")]
        files += [synthetic_run("mtcsac", seed, {task: rising(20.0 + seed, 32_000) for task in ("walk", "run")})]
        for results in files:
            results["run_name"] = results["run_name"].replace("cpu/", "cpu-wide/")
            (runs_dir / f"{results['run_name'].split('/')[1]}.json").write_text(json.dumps(results))
    report.main(report.Args(scale="cpu-wide", results_dir=str(tmp_path / "results")))
    table = (tmp_path / "results" / "cpu-wide" / "table1.md").read_text()
    assert "medium-replay" not in table  # the scale's datasets only
    sections = {part.split("\n")[0].split(":")[0]: part for part in table.split("## ")[1:]}

    def walk_row(section: str) -> list[str]:
        row = next(line for line in sections[section].splitlines() if line.startswith("| medium | walk"))
        return [cell.strip() for cell in row.strip("|").split("|")][2:]

    assert walk_row("Equal steps at 8,000") == ["**501.00 ± 0.82**", "320.00 ± 0.00", "168.00 ± 6.53", "–"]
    assert walk_row("Equal steps") == ["501.00 ± 0.82", "**640.00 ± 0.00**", "336.00 ± 13.06", "–"]
    assert walk_row("Equal epochs") == ["501.00 ± 0.82", "640.00 ± 0.00", "**672.00 ± 26.13**", "–"]
    assert walk_row("Plateau")[1] == "580.00 ± 0.00"  # CSAC's last 4 of 16: 520, 560, 600, 640
    plateau = next(line for line in sections["Has it levelled off?"].splitlines() if line.startswith("| medium |"))
    cells = [cell.strip() for cell in plateau.strip("|").split("|")][1:]
    assert cells[0] == "501.0 → 501.0 (+0%, levelled off)" and cells[1] == "420.0 → 580.0 (+38%, **still rising**)"
    assert cells[3] == "–"
    assert "P(CSAC > BC)" in table and "| medium | walk | " in sections["Interval estimates"]
    csac_bc = next(line for line in table.split("Probability of improvement, equal steps:")[1].splitlines()
                   if line.startswith("| medium | walk"))
    assert csac_bc.rstrip(" |").endswith("1.00 [1.00, 1.00]")  # every CSAC run above every BC run at B


def test_cpu_wide_report_sets_its_runs_beside_the_cpu_scales_at_equal_steps_and_at_each_ones_end(tmp_path):
    """The width comparison: per reading and task, "3x1024 mean / 2x256 mean" from the two scales' runs (seeds in
    brackets where fewer than 3, '–' where missing), then the seed report's row; no section without the other's runs."""
    import report

    def write(scale: str, results: dict, layers: int, width: int) -> None:
        results["run_name"] = results["run_name"].replace("cpu/", f"{scale}/")
        results["args"].update(num_layers=layers, hidden_dim=width)
        folder = tmp_path / "results" / scale / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{results['run_name'].split('/')[1]}.json").write_text(json.dumps(results))

    wide_steps, narrow_steps = range(1000, 16_001, 1000), range(4000, 40_001, 4000)
    for seed in range(3):
        write("cpu-wide", synthetic_run("csac", seed, {"walk": [(s, s / 100 + seed) for s in wide_steps]}), 3, 1024)
        write("cpu", synthetic_run("csac", seed, {"walk": [(s, s / 1000) for s in narrow_steps]}), 2, 256)
    write("cpu-wide", synthetic_run("bc", 0, {"walk": [(s, 500.0) for s in wide_steps]}), 3, 1024)
    report.main(report.Args(scale="cpu-wide", results_dir=str(tmp_path / "results")))
    table = (tmp_path / "results" / "cpu-wide" / "table1.md").read_text()
    section = table.split("## Beside the `cpu` scale: 3x1024 here, 2x256 there")[1].split("## ")[0]

    def row(name: str) -> list[str]:
        line = next(line for line in section.splitlines() if line.startswith(f"| {name} | medium | walk |"))
        return [cell.strip() for cell in line.strip("|").split("|")][3:]

    assert row("equal steps at 8,000")[:2] == ["500.0 (1) / –", "81.0 / 8.0"]  # 80 + the seeds' mean / 8
    assert row("equal steps at 16,000")[1] == "161.0 / 16.0"
    assert row("plateau")[1] == "146.0 / 38.0"  # the last 4 of 16 here (130 to 160, + seed), the last 2 of 10 there
    assert row("best checkpoint")[1] == "161.0 / 40.0"
    assert row("the report's Table 1") == ["551.5", "653.6", "870.1", "907.4"]

    shutil.rmtree(tmp_path / "results" / "cpu")
    report.main(report.Args(scale="cpu-wide", results_dir=str(tmp_path / "results")))
    assert "## Beside" not in (tmp_path / "results" / "cpu-wide" / "table1.md").read_text()


def test_cost_line_claims_core_hours_only_where_every_process_recorded_one_thread():
    """Wall time equals core-hours only for one-thread runs; a run without a thread record (older results) or with
    two threads makes the line say wall time, not core-hours."""
    import report

    one = synthetic_run("bc", 0, {"walk": [(1000, 1.0)]})
    one["wall_time_s"], one["cpus"] = 3600.0, [{"model": "x", "threads": 1}]
    two = {**one, "cpus": [{"model": "x", "threads": 1}, {"model": "x", "threads": 2}]}  # resumed with 2 threads
    unrecorded = {**one, "cpus": [{"model": "x"}]}
    assert report.run_costs([one])[-1].endswith("(each run one process with one torch thread: as many core-hours).")
    for runs in ([one, two], [unrecorded]):
        assert "wall time, not core-hours" in report.run_costs(runs)[-1]
    assert report.run_costs([one, two])[-1].startswith("All 2 runs: 2.0 hours of wall time")


def test_report_names_every_gpu_the_runs_trained_on():
    """Runs on a GPU are labelled by it (one entry per process, None for a process on a CPU); CPU-only runs give
    no GPU line."""
    import report

    h200 = {"name": "NVIDIA H200", "capability": "9.0", "memory_gib": 139.8, "cuda": "12.8", "driver": "570.1"}
    a100 = {"name": "NVIDIA A100", "capability": "8.0", "memory_gib": 39.4, "cuda": "12.8", "driver": None}
    runs = [{"gpus": [h200, h200]}, {"gpus": [None, a100]}, {"gpus": [h200]}, {"gpus": [None]}, {}]
    assert report.gpus(runs) == ("NVIDIA A100 (compute capability 8.0, 39.4 GiB, CUDA 12.8, driver unknown): 1 run; "
                                 "NVIDIA H200 (compute capability 9.0, 139.8 GiB, CUDA 12.8, driver 570.1): 2 runs")
    assert report.gpus([{"gpus": [None]}, {}]) is None
