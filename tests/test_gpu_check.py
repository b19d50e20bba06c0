"""benchmarks/gpu_check.py in CPU mode on tiny sizes: where gymnasium, tyro, dm_control and MuJoCo are missing (as on
the lent GPU machine) it still runs every section and writes its json; a section that fails is recorded and the
others run; bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_update  # noqa: E402
import gpu_check  # noqa: E402

TINY = gpu_check.PRESETS["tiny"]["network"]
MISSING_ON_THE_GPU_MACHINE = ("gymnasium", "tyro", "dm_control", "mujoco")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def real_steps_per_epoch() -> int:
    rows = sum(len(np.load(os.path.join(ROOT, "data", f"walker_{task}_medium.npz"))["rewards"]) for task in ("walk", "run"))
    return rows // TINY["batch_size"]


class StandInGraph:
    """CUDAGraphUpdate's place on a CPU, where no CUDA graph can be recorded: it steps Learner.update, so that the
    check's one-graph rows, loop steps, training and projection run their plumbing (not a graph)."""
    calls = 0

    def __init__(self, learner):
        self.update = learner.update

    def __call__(self, *batch):
        StandInGraph.calls += 1
        return self.update(*batch)


def check_common_sections(record: dict, budget: float, one_graph: bool = False) -> None:
    """What every CPU-mode run must hold, simulator or not; one_graph: with StandInGraph as the one-graph path."""
    assert record["check"]["device"] == "cpu" and record["check"]["sizes"] == "tiny"
    assert record["check"]["network"] == TINY
    machine = record["machine"]
    assert machine["gpu"] is None and machine["torch"] == torch.__version__ and machine["cpu_count"] >= 1
    assert {"model", "capability", "native_bf16", "threads"} <= set(machine["cpu"])
    assert set(machine["environment"]) == set(gpu_check.ENVIRONMENT_RECORDED)
    assert machine["environment"]["CUBLAS_WORKSPACE_CONFIG"]  # set by the check, as the scripts set it
    rows = record["updates"]
    assert [(r["algorithm"], r["precision"], r["path"]) for r in rows] == [
        (a, p, path) for a in gpu_check.ALGORITHMS for p in gpu_check.PRECISIONS for path in gpu_check.PATHS]
    for row in rows:
        if row["path"] == "one-graph" and not one_graph:  # CUDA graphs are CUDA's
            assert row["status"] == "not measured" and "not on CPU" in row["note"]
            continue
        assert row["status"] == "ok" and positive(row["ms"]) and positive(row["tflops"]) and row["tf32"] is False
        assert positive(row["record_s"]) if row["path"] == "one-graph" else "record_s" not in row
        script_args = bench_update.MODULES[row["algorithm"]].Args(**TINY)
        assert row["gflop"] == pytest.approx(bench_update.update_gflop(row["algorithm"], script_args))
        assert row["tflops"] == pytest.approx(row["gflop"] / row["ms"])  # GFLOP per ms = TFLOP/s
    evaluation = record["evaluation"]
    assert evaluation["tasks"] == ["walk", "run"] and evaluation["steps"] == 1000
    assert positive(evaluation["policy_only_round_s"])
    sync = record["sync_check"]
    assert sync["trap"].startswith("skipped")
    for algorithm in gpu_check.ALGORITHMS:
        assert sync[f"{algorithm} eager"]["status"] == "ran"
        assert sync[f"{algorithm} one-graph"]["status"] == ("ran" if one_graph else "not run")
    paths = ["eager", "one-graph"] if one_graph else ["eager"]
    assert [path for path, run in record["training"].items() if run["status"] == "ok"] == paths
    if not one_graph:
        assert record["training"]["one-graph"]["status"] == "not run"  # --cuda-graph applies on CUDA only
    for path in paths:
        assert record["training"][path]["budget_s"] == pytest.approx(budget / len(paths))  # the budget shared
    training = record["training"]["eager"]
    assert training["status"] == "ok" and training["algorithm"] == "mtcsac" and training["network"] == TINY
    assert not training["completed"] and training["bf16"] is False  # fp32: the paper's default on a CPU
    assert training["steps"] >= 1 and positive(training["ms_per_step"]) and positive(training["checkpoint_save_s"])
    assert training["train_s"] <= training["wall_s"] <= budget + 30  # stopped by the budget, after its last step
    assert training["steps_per_epoch"] == real_steps_per_epoch()  # the real data files, loaded by mtcsac.py itself
    projection = record["projection"]
    assert projection["status"] == "projected" and projection["evaluations"] == 100  # 1000 epochs, every 10th
    assert projection["steps"] == 1000 * training["steps_per_epoch"]
    assert list(projection["paths"]) == paths
    for path in paths:
        projected = projection["paths"][path]
        ms_per_step = record["training"][path]["ms_per_step"]
        assert projected["update_s"] == pytest.approx(projection["steps"] * ms_per_step / 1e3)
        assert projected["total_s"] == pytest.approx(projected["update_s"] + projection["evaluations_s"])
        assert "meets_goal" not in projected  # issue 38's goals are for the paper size
    assert projection["evaluation_s_each"] > training["checkpoint_save_s"]  # a round plus a checkpoint
    assert set(projection["from_update_rows_minutes"]) == {f"{p} {path}" for p in ("fp32", "bf16") for path in paths}
    assert all(positive(minutes) for minutes in projection["from_update_rows_minutes"].values())


def test_cpu_mode_runs_every_section_where_the_simulator_and_command_line_packages_are_missing(tmp_path):
    """As on the lent GPU machine: the scripts load with stand-ins, evaluation times the policy side and says
    the MuJoCo part was not measured, training runs on the real data."""
    out = tmp_path / "out"
    code = (f"import runpy, sys; sys.modules.update(dict.fromkeys({MISSING_ON_THE_GPU_MACHINE!r})); "
            f"sys.argv = ['gpu_check.py', '--out', {str(out)!r}, '--device', 'cpu', '--budget-seconds', '2']; "
            f"runpy.run_path({os.path.join(ROOT, 'benchmarks', 'gpu_check.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["check"]["ok"] is True and record["errors"] == {}
    assert set(record) == {"check", "errors", "machine", "peaks", "updates", "evaluation", "sync_check", "training",
                           "projection"}
    assert set(record["machine"]["stood_in"]) == {"gymnasium", "tyro", "walker_data"}
    assert record["machine"]["simulator_missing"]
    assert positive(record["peaks"]["fp32"]) and positive(record["peaks"]["bf16"]) and record["peaks"]["tf32"] is None
    for row in record["updates"]:
        if row["status"] == "ok":
            assert positive(row["percent_of_peak"]) and row["peak"] == row["precision"]
    assert record["evaluation"]["simulator"].startswith("not measured: no simulator here")
    assert "serial_round_s" not in record["evaluation"]
    assert record["training"]["eager"]["evaluations_stepped"] == "policy side only (no simulator)"
    assert "MuJoCo stepping NOT included" in record["projection"]["evaluation_from"]
    check_common_sections(record, budget=2)
    log = (out / "gpu_check.log").read_text()
    assert "MuJoCo stepping NOT measured" in log and "mtcsac.py train(), eager:" in log and "projected whole run, eager" in log


def test_a_failing_section_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    """The peaks fail (as a GPU out of memory would): the json says so, the update rows come without a % of peak,
    every other section runs (here with the simulator: real evaluation episodes, serial and with workers, and with
    StandInGraph as the one-graph path: its rows, steps, training and projection), and the exit is non-zero with
    one line naming the section."""
    def planted(*args, **kwargs):
        raise RuntimeError("planted fault")

    monkeypatch.setattr(bench_update, "matmul_peak", planted)
    monkeypatch.setattr(gpu_check, "one_graph_unavailable", lambda module, device: None)
    for module in bench_update.MODULES.values():
        monkeypatch.setattr(module, "CUDAGraphUpdate", StandInGraph)
    StandInGraph.calls = 0
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--budget-seconds", "3"])
    assert str(stop.value.code).startswith("error: 1 part(s) of the check failed: peaks")
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["check"]["ok"] is False and record["errors"] == {"peaks": "RuntimeError: planted fault"}
    assert record["peaks"] is None
    assert all(row["percent_of_peak"] is None for row in record["updates"] if row["status"] == "ok")
    evaluation = record["evaluation"]
    assert evaluation["simulator"] == "measured" and positive(evaluation["serial_round_s"])
    assert evaluation["workers"] >= 1 and positive(evaluation["workers_round_s"])
    assert evaluation["workers_same_returns"] is True  # EvaluationWorkers step the same episodes as serial
    assert record["training"]["eager"]["evaluations_stepped"] == "real episodes"
    check_common_sections(record, budget=3, one_graph=True)
    # the one-graph rows and loop steps stepped it (train() itself steps eagerly on a CPU, as it says)
    assert StandInGraph.calls >= 8 * (1 + 1 + 3) + 4 * 4
    assert "--cuda-graph applies only on CUDA" in (tmp_path / "gpu_check.log").read_text()
    assert "planted fault" in (tmp_path / "gpu_check.log").read_text()  # the traceback is in the log


@pytest.mark.parametrize("flags,message", [
    ([], "error: the following arguments are required: --out"),
    (["--sizes", "huge"], "error: argument --sizes: invalid choice: 'huge' (choose from "),
    (["--budget-seconds", "0"], "error: --budget-seconds 0 is outside its range (0, inf)"),
    (["--budget-seconds", "nan"], "error: --budget-seconds nan is outside its range (0, inf)"),
    (["--eval-episodes", "0"], "error: --eval-episodes 0 is outside its range [1, inf)"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(flags, message, tmp_path):
    argv = flags if not flags or flags[0] == "--out" else ["--out", str(tmp_path), "--device", "cpu", *flags]
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(argv)
    assert stop.value.code.startswith(message) and "\n" not in stop.value.code
    assert not (tmp_path / "gpu_check.json").exists()  # checked before any work


def test_out_that_is_a_file_or_cuda_where_there_is_none_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--out", str(tmp_path / "file"), "--device", "cpu"])
    assert stop.value.code == f"error: --out {tmp_path / 'file'}: exists and is not a folder"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as stop:
            gpu_check.main(["--out", str(tmp_path), "--device", "cuda"])
        assert stop.value.code.startswith("error: --device cuda: no CUDA device here")
