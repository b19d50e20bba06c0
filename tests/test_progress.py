"""What a run tells its user while it trains: a progress bar on a terminal, the cost up front, loss means."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest
import torch
from conftest import ROOT, TASK_FLAGS, TINY_FLAGS

import bc
import csac
import hcsac
import mtcsac
import reproduce


def run_in_terminal(script: str, *flags: str, cwd, timeout: float = 300) -> str:
    """Run a script with a pseudo-terminal (80 x 24) as its stdout and stderr; return everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *flags], cwd=cwd, stdin=slave,
                               stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    while select.select([master], [], [], timeout)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the script exited and closed its end
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0, output.decode(errors="replace")[-2000:]
    return output.decode(errors="replace")


@pytest.mark.parametrize("script", ["bc.py", "csac.py", "mtcsac.py", "hcsac.py"])
def test_progress_bar_on_a_terminal_before_the_first_evaluation(script, tiny_data_dir, tmp_path):
    output = run_in_terminal(script, "--data-dir", tiny_data_dir, *TASK_FLAGS[script], *TINY_FLAGS, cwd=tmp_path)
    first_evaluation = output.index("epoch 1/2")
    bar = re.search(r"\d+%\|[^|\r\n]*\| *\d+/\d+ \[", output)  # tqdm: "33%|███▎      | 2/6 ["
    assert bar and bar.start() < first_evaluation, output[:2000]
    assert "step/s" in output and output.index("cost: ") < first_evaluation


def test_cost_line_projects_the_run_and_hints_on_a_slow_cpu(capsys):
    progress = csac.Progress(total_steps=1_000_000, done_steps=0, device=torch.device("cpu"),
                             smaller_flags="--hidden-dim 256 --epochs 154")
    for step in range(1, 3):
        progress.step(step)
    progress.timer_start -= 10.0  # as if the 5 timed updates took 2 s each
    for step in range(3, 8):
        progress.step(step)
    out = capsys.readouterr().out
    [cost] = [line for line in out.splitlines() if line.startswith("cost: ")]
    seconds_per_update = float(re.search(r"cost: ([\d.]+) ms per update", cost).group(1)) / 1000
    assert seconds_per_update == pytest.approx(2.0, rel=0.05)
    assert re.search(r"the remaining 999993 of 1000000 updates take about 23\.[12] days", cost)  # 2 s x 999993
    assert "hint: this is a GPU-sized run" in out and "--hidden-dim 256 --epochs 154" in out

    quick = csac.Progress(total_steps=100, done_steps=0, device=torch.device("cpu"), smaller_flags="--x")
    for step in range(1, 8):
        quick.step(step)
    out = capsys.readouterr().out
    assert "cost: " in out and "hint" not in out


def test_logged_loss_is_the_mean_of_the_steps_since_the_previous_log(tiny_data_dir, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    per_step = []
    plain_update = csac.Learner.update

    def recording_update(self, *batch):
        metrics = plain_update(self, *batch)
        per_step.append({name: value.item() for name, value in metrics.items()})
        return metrics

    monkeypatch.setattr(csac.Learner, "update", recording_update)
    monkeypatch.chdir(tmp_path)
    # 1000 rows, batch 256: 3 steps per epoch, 9 in all; logs every 2 steps and at each evaluation (every 3 epochs).
    args = csac.Args(task="walk", data_dir=tiny_data_dir, run_name="means", epochs=3, hidden_dim=32, num_layers=2,
                     batch_size=256, eval_every=3, eval_episodes=1, log_every=2)
    csac.train(args)
    events = EventAccumulator(str(tmp_path / "runs" / "means"))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("losses/critic_loss")}
    assert sorted(logged) == [2, 4, 6, 8, 9]
    previous = 0
    for step, value in sorted(logged.items()):
        expected = sum(m["critic_loss"] for m in per_step[previous:step]) / (step - previous)
        assert value == pytest.approx(expected, rel=1e-5)
        previous = step
    assert logged[2] != pytest.approx(per_step[1]["critic_loss"], rel=1e-5)  # a mean, not the last batch
    alpha = {event.step: event.value for event in events.Scalars("charts/alpha")}
    assert alpha[4] == pytest.approx((per_step[2]["alpha"] + per_step[3]["alpha"]) / 2, rel=1e-6)


@pytest.mark.parametrize("module,run", [(bc, reproduce.Run("bc", "medium", 0, "walk")),
                                        (csac, reproduce.Run("csac", "medium-replay", 0, "run")),
                                        (mtcsac, reproduce.Run("mtcsac", "medium", 0, None)),
                                        (hcsac, reproduce.Run("hcsac", "medium-replay", 0, None))],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_slow_run_hint_gives_the_flags_of_reproduces_cpu_scale(module, run):
    """The scripts stand alone, so their hint repeats the cpu scale; this keeps the two the same."""
    data_dir = os.path.join(reproduce.ROOT, "data")
    expected = " ".join(reproduce.scale_flags("cpu", run, data_dir))
    assert module.cpu_scale_flags(module.Args(), reproduce.num_transitions(run, data_dir)) == expected
    assert module.cpu_scale_flags(module.Args(hidden_dim=256, num_layers=2, batch_size=256), 50_000) == ""
