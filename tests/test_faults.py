"""Faults a long grid meets, each on a one-run tiny grid: a torn results copy, a checkpoint that does not load,
a second launcher on the same results folder, a run orphaned by a killed grid, and a full disk."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY_FLAGS, copy_grid, run_script

# One bc run: seconds.
GRID = ["--scale", "tiny", "--seeds", "0", "--workers", "1", "--algorithms", "bc", "--datasets", "medium"]
RUN = "bc__medium__walk__s0"


def grid_flags(tiny_data_dir, tmp_path) -> list[str]:
    return [*GRID, "--data-dir", tiny_data_dir, "--workdir", str(tmp_path), "--results-dir", str(tmp_path / "results")]


def run_grid(tiny_data_dir, tmp_path) -> subprocess.CompletedProcess:
    return run_script("scripts/reproduce.py", *grid_flags(tiny_data_dir, tmp_path), cwd=tmp_path)


def committed(tmp_path, name: str) -> dict:
    return json.loads((tmp_path / "results" / "tiny" / "runs" / f"{name}.json").read_text())


@pytest.fixture()
def finished_grid(tiny_grid, tmp_path):
    """The one-dataset bc grid, finished: the shared tiny grid's runs, copied into tmp_path."""
    copy_grid(tiny_grid[0], tmp_path)
    return {name: committed(tmp_path, name) for name in (RUN, "bc__medium__run__s0")}


def test_a_torn_results_copy_is_not_counted_as_done(tiny_data_dir, tmp_path, finished_grid):
    copy = tmp_path / "results" / "tiny" / "runs" / f"{RUN}.json"
    copy.write_bytes(copy.read_bytes()[:300])  # as a kill mid-copy left it before copies were atomic
    os.remove(tmp_path / "runs" / "tiny" / RUN / "results.json")
    result = run_grid(tiny_data_dir, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{copy}: not a complete results file (JSONDecodeError" in result.stdout
    assert "1 already finished, 1 to do" in result.stdout and f"{RUN}: done" in result.stdout
    again = committed(tmp_path, RUN)  # resumed from its final checkpoint: the same numbers
    assert again["tasks"]["walk"]["final"]["returns"] == finished_grid[RUN]["tasks"]["walk"]["final"]["returns"]
    assert again["gradient_steps"] == finished_grid[RUN]["gradient_steps"]


def test_a_checkpoint_that_does_not_load_is_set_aside_and_the_run_restarts(tiny_data_dir, tmp_path, finished_grid):
    run_dir = tmp_path / "runs" / "tiny" / RUN
    os.remove(run_dir / "results.json")
    os.remove(tmp_path / "results" / "tiny" / "runs" / f"{RUN}.json")
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    result = run_grid(tiny_data_dir, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{run_dir / 'checkpoint.pt'}: not a loadable checkpoint (" in result.stdout
    assert "kept aside as checkpoint.pt.bad, the run restarts from scratch" in result.stdout
    assert (run_dir / "checkpoint.pt.bad").read_bytes() == b"PK\x03\x04 torn"
    again = committed(tmp_path, RUN)  # from scratch, same seed: the same numbers
    assert again["tasks"]["walk"]["final"]["returns"] == finished_grid[RUN]["tasks"]["walk"]["final"]["returns"]


def test_a_second_grid_on_the_same_results_folder_exits_at_once(tiny_data_dir, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    with open(results / ".grid.lock", "a+") as lock:  # as a running grid holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("pid 12345 on elsewhere\n")
        lock.flush()
        result = run_grid(tiny_data_dir, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"error: {results / '.grid.lock'}: another grid is running on this results folder "
                                     "(pid 12345 on elsewhere)")
    assert not (tmp_path / "runs").exists()  # nothing started
    after = run_grid(tiny_data_dir, tmp_path)  # the lock died with its holder: no manual delete needed
    assert after.returncode == 0, after.stdout + after.stderr


def test_an_orphaned_run_still_alive_is_waited_for_not_started_twice(tiny_data_dir, tmp_path):
    """An orphan of a SIGKILLed grid: a bc process training in the run folder, started here the way the grid
    starts it and paused (SIGSTOP) once it holds the folder's lock; the restarted grid must wait for it and take
    its results, starting no second copy."""
    run_dir = tmp_path / "runs" / "tiny" / RUN
    flags = ["--task", "walk", "--dataset", "medium", "--seed", "0", "--data-dir", tiny_data_dir,
             "--run-name", f"tiny/{RUN}", *TINY_FLAGS, "--epochs", "100", "--eval-every", "100"]
    orphan = subprocess.Popen([sys.executable, os.path.join(ROOT, "bc.py"), *flags], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    grid = None
    try:
        while not (run_dir / ".lock").exists() or not (run_dir / ".lock").read_text():
            assert orphan.poll() is None, "the orphan ended before taking its run folder's lock"
        orphan.send_signal(signal.SIGSTOP)
        grid = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"),
                                 *grid_flags(tiny_data_dir, tmp_path)], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        while not lines or "waiting for it" not in lines[-1]:
            line = grid.stdout.readline()
            assert line, "the grid ended without waiting: " + "".join(lines)
            lines.append(line)
        assert grid.poll() is None  # waiting, not starting a second copy
        orphan.send_signal(signal.SIGCONT)
        output = "".join(lines) + grid.communicate(timeout=300)[0]
        assert orphan.wait(timeout=60) == 0
    finally:
        for process in (orphan, grid):
            if process is not None and process.poll() is None:
                process.kill()
    assert grid.returncode == 0, output
    assert f"{RUN}: still running from an earlier grid (pid {orphan.pid} on " in output
    assert not (run_dir / "stdout.log").exists()  # the grid never started this run itself
    assert committed(tmp_path, RUN)["tasks"]["walk"]["final"]["epoch"] == 100  # the orphan's results, copied


def test_a_second_process_in_a_run_folder_is_refused(tiny_data_dir, tmp_path):
    run_dir = tmp_path / "runs" / "held"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("pid 999 on somewhere\n")
        lock.flush()
        result = run_script("bc.py", "--task", "walk", "--data-dir", tiny_data_dir, "--run-name", "held", *TINY_FLAGS,
                            cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: runs/held: another process is training in this folder "
                                     "(pid 999 on somewhere)")


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 200 KiB tmpfs: room for one tiny-run checkpoint (~125 KB) but not for its atomic replacement."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(tiny_data_dir, tiny_disk):
    result = run_script("csac.py", "--task", "walk", "--data-dir", tiny_data_dir, "--run-name", "full", *TINY_FLAGS,
                        "--eval-episodes", "1", cwd=tiny_disk)
    checkpoint = tiny_disk / "runs" / "full" / "checkpoint.pt"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: runs/full/checkpoint.pt: cannot write it (No space left on device); "
                                     "the previous version is intact")
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1  # epoch 2's checkpoint did not fit
    assert not any(name.startswith("checkpoint.pt.tmp") for name in os.listdir(checkpoint.parent))
    assert not (tiny_disk / "runs" / "full" / "results.json").exists()


def test_the_grid_log_names_killed_stopped_and_unstarted_runs():
    import reproduce

    run = reproduce.Run("bc", "medium", 0, "walk")
    assert "FAILED (killed by SIGKILL; the same command resumes it from its checkpoint)" in \
        reproduce.describe(run, -9, 60.0, 0.0)
    assert "FAILED (exit 1, see its stdout.log)" in reproduce.describe(run, 1, 60.0, 0.0)
    assert reproduce.describe(run, reproduce.PREEMPTED, 60.0, 0.0).endswith(
        "stopped (the same command resumes it from its checkpoint) in 1.0 min")
    assert reproduce.describe(run, reproduce.PREEMPTED, None, 0.0).endswith("not started (the grid was stopping)")


# ------------------------------------------------------------------ a seeded schedule of faults on one grid
# 12 bc runs of a few seconds each: the faults are the grid's, whatever the algorithm (and bc, the smallest
# update, is the least exposed to the rare last-bit differences between fresh processes the README describes)
BIG_GRID = ["--scale", "tiny", "--seeds", "0", "1", "2", "--workers", "2", "--algorithms", "bc"]


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (the grid's runs)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def wait_for_a_run(grid: subprocess.Popen, timeout: float = 120) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and grid.poll() is None:
        running = children(grid.pid)
        if running:
            return running
        time.sleep(0.05)
    return []


def final_numbers(results_dir) -> dict:
    numbers = {}
    for path in sorted((results_dir / "tiny" / "runs").glob("*.json")):
        results = json.loads(path.read_text())
        numbers[path.stem] = (results["gradient_steps"],
                              {t: [e["returns"] for e in entry["history"]] for t, entry in results["tasks"].items()})
    return numbers


def inject_file_fault(kind: str, work, rng: random.Random) -> str | None:
    """A torn results copy or a truncated checkpoint (its run's results removed, so that the grid must use it);
    returns the line the grid's log must show, None where there was nothing to corrupt yet."""
    if kind == "torn copy":
        copies = sorted((work / "results" / "tiny" / "runs").glob("*.json"))
        if not copies:
            return None
        victim = rng.choice(copies)
        victim.write_bytes(victim.read_bytes()[:rng.randrange(1, 200)])
        (work / "runs" / "tiny" / victim.stem / "results.json").unlink(missing_ok=True)
        return f"{victim}: not a complete results file"
    checkpoints = sorted((work / "runs" / "tiny").glob("*/checkpoint.pt"))
    if not checkpoints:
        return None
    victim = rng.choice(checkpoints)
    victim.write_bytes(victim.read_bytes()[:rng.randrange(10, 1000)])
    for stale in (victim.parent / "results.json", work / "results" / "tiny" / "runs" / f"{victim.parent.name}.json"):
        stale.unlink(missing_ok=True)
    return f"{victim}: not a loadable checkpoint"


def test_a_grid_under_a_seeded_schedule_of_faults_ends_as_an_uninterrupted_one(tiny_data_dir, tmp_path):
    """12 kills (of a run, SIGTERM to the grid, SIGKILL to the grid, which orphans its runs) in a seeded order,
    torn results copies and truncated checkpoints between them, each followed by the same grid command: the
    committed results end bitwise equal (returns and gradient steps) to an uninterrupted grid's, no run ever had
    a second process in its folder, and every fault is in the grids' log as what it was."""
    reference = tmp_path / "reference"
    reference.mkdir()
    flags = [*BIG_GRID, "--data-dir", tiny_data_dir]
    done = run_script("scripts/reproduce.py", *flags, "--workdir", str(reference), "--results-dir",
                      str(reference / "results"), cwd=reference)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = final_numbers(reference / "results")

    work = tmp_path / "faulty"
    work.mkdir()
    command = [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), *flags, "--workdir", str(work),
               "--results-dir", str(work / "results")]
    rng = random.Random(20261201)
    kills = ["kill run", "term grid", "kill grid"] * 4
    rng.shuffle(kills)
    log, injected = [], []
    for cycle, kill in enumerate(kills):
        if cycle >= 4 and cycle % 2 == 0:  # once there are files to corrupt
            kind = "torn copy" if cycle % 4 == 0 else "bad checkpoint"
            trace = inject_file_fault(kind, work, rng)
            if trace:
                injected.append((kind, trace))
        grid = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if wait_for_a_run(grid):
            time.sleep(rng.uniform(0, 1.0))
            victims = children(grid.pid)
            if kill == "kill run" and victims:
                os.kill(rng.choice(victims), signal.SIGKILL)
                injected.append((kill, "FAILED (killed by SIGKILL"))
            elif kill == "term grid" and grid.poll() is None:
                grid.send_signal(signal.SIGTERM)
                injected.append((kill, "stopped (the same command resumes it from its checkpoint)"))
            elif kill == "kill grid" and grid.poll() is None:
                grid.kill()
                injected.append((kill, None))  # its orphans may finish before the next grid looks
        log.append(grid.communicate(timeout=600)[0])
    for _ in range(5):  # then the same command until the grid is done
        final = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=600)
        log.append(final.stdout + final.stderr)
        if final.returncode == 0 and ", 0 to do" in final.stdout:
            break
    everything = "\n".join(log)
    assert len(injected) >= 12, injected
    assert {kind for kind, _ in injected} >= {"kill run", "term grid", "kill grid", "torn copy", "bad checkpoint"}
    for kind, trace in injected:
        assert trace is None or trace in everything, (kind, trace)
    assert final_numbers(work / "results") == expected
    for stdout_log in (work / "runs" / "tiny").glob("*/stdout.log"):
        assert "another process is training in this folder" not in stdout_log.read_text()


def runs_in(work) -> list[int]:
    """Live training processes running in `work` (under Ray they are children of Ray's workers, not the grid's)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if state != "Z" and cwd == str(work) and any(a.endswith((b"bc.py", b"csac.py")) for a in argv):
                found.append(int(entry))
    return found


def test_the_ray_launcher_survives_a_killed_run_and_a_sigterm(tiny_data_dir, tiny_grid, tmp_path):
    """The grid's bc and csac medium runs as Ray tasks on a local Ray instance with 2 CPUs, through a SIGTERM to the
    grid and a SIGKILL to a run: the same numbers as the local launcher's grid (tiny_grid)."""
    flags = ["--scale", "tiny", "--seeds", "0", "--workers", "2", "--algorithms", "bc", "csac", "--datasets", "medium",
             "--data-dir", tiny_data_dir]
    names = {f"{algorithm}__medium__{task}__s0" for algorithm in ("bc", "csac") for task in ("walk", "run")}
    expected = {name: numbers for name, numbers in final_numbers(tiny_grid[0] / "results").items() if name in names}
    assert set(expected) == names

    work = tmp_path / "ray"
    work.mkdir()
    command = [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), *flags, "--workdir", str(work),
               "--results-dir", str(work / "results"), "--launcher", "ray", "--ray-cpus", "2", "--cpus-per-run", "1"]
    outputs = []
    for fault in ("term grid", "kill run"):
        grid = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while not runs_in(work) and grid.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        running = runs_in(work)
        assert running, "no run seen under Ray: " + (grid.communicate()[0] if grid.poll() is not None else "")
        if fault == "kill run":
            os.kill(running[0], signal.SIGKILL)
        else:
            grid.send_signal(signal.SIGTERM)
        outputs.append(grid.communicate(timeout=300)[0])
        assert grid.returncode == (1 if fault == "kill run" else 75), outputs[-1]
    assert "grid stopped after" in outputs[0] and "to resume (run the same command again)" in outputs[0]
    assert "FAILED (killed by SIGKILL" in outputs[1]
    final = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert final_numbers(work / "results") == expected
