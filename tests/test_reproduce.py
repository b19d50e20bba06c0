"""The experiment grid and its report on the tiny scale: every cell filled, a figure, resumability."""

import json
import os

from conftest import run_script


def test_grid_and_report(tiny_data_dir, tmp_path):
    grid = ["--scale", "tiny", "--seeds", "0", "--workers", "2", "--data-dir", tiny_data_dir, "--workdir", str(tmp_path)]
    result = run_script("scripts/reproduce.py", *grid, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 runs in the tiny grid, 0 already finished, 12 to do" in result.stdout

    out = tmp_path / "results"
    result = run_script("scripts/report.py", "--scale", "tiny", "--workdir", str(tmp_path), "--out-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    table = (out / "table1.md").read_text()
    ours = table.split("## The seed report")[0]
    rows = [line for line in ours.splitlines() if line.startswith("| medium")]
    assert len(rows) == 6  # 2 datasets x (walk, run, average)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")][2:]
        assert len(cells) == 4 and all("±" in c for c in cells), row
    # the numbers are the runs' own final evaluations
    with open(out / "runs" / "csac__medium__walk__s0.json") as f:
        csac_walk = json.load(f)["tasks"]["walk"]["final"]["mean"]
    assert f"{csac_walk:.2f} ± 0.00" in rows[0]
    assert (out / "figure4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(os.listdir(out / "runs")) == 12

    # Started again, the grid redoes nothing; with one result removed, only that run.
    os.remove(tmp_path / "runs" / "tiny" / "bc__medium__run__s0" / "results.json")
    os.remove(tmp_path / "runs" / "tiny" / "bc__medium__run__s0" / "checkpoint.pt")
    result = run_script("scripts/reproduce.py", *grid, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "11 already finished, 1 to do" in result.stdout and "bc__medium__run__s0: done" in result.stdout


def test_report_marks_missing_runs(tiny_data_dir, tmp_path):
    grid = ["--scale", "tiny", "--seeds", "0", "--workers", "1", "--data-dir", tiny_data_dir, "--workdir", str(tmp_path),
            "--algorithms", "bc", "--datasets", "medium"]
    assert run_script("scripts/reproduce.py", *grid, cwd=tmp_path).returncode == 0
    out = tmp_path / "results"
    result = run_script("scripts/report.py", "--scale", "tiny", "--workdir", str(tmp_path), "--out-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ours = (out / "table1.md").read_text().split("## The seed report")[0]
    walk = next(line for line in ours.splitlines() if line.startswith("| medium | walk"))
    assert walk.count("–") == 3 and "±" in walk  # BC filled, the three others missing, never zero
    replay = next(line for line in ours.splitlines() if line.startswith("| medium-replay | walk"))
    assert replay.count("–") == 4
