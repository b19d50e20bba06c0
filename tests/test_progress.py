"""What a run tells its user while it trains: a progress bar on a terminal, the cost up front, loss means."""

from __future__ import annotations

import fcntl
import math
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


def cost_output(progress, capsys) -> str:
    """Drive a Progress through its timed updates as if each took 2 s; returns what it printed."""
    for step in range(1, 3):
        progress.step(step)
    progress.timer_start -= 10.0  # as if the 5 timed updates took 2 s each
    for step in range(3, 8):
        progress.step(step)
    return capsys.readouterr().out


def test_cost_line_projects_the_run_and_hints_on_a_slow_cpu(capsys):
    out = cost_output(csac.Progress(total_steps=1_000_000, done_steps=0, device=torch.device("cpu"),
                                    suggest_scale=True), capsys)
    [cost] = [line for line in out.splitlines() if line.startswith("cost: ")]
    seconds_per_update = float(re.search(r"cost: ([\d.]+) ms per update", cost).group(1)) / 1000
    assert seconds_per_update == pytest.approx(2.0, rel=0.05)
    assert re.search(r"the remaining 999993 of 1000000 updates take about 23\.[12] days", cost)  # 2 s x 999993
    assert "hint: a GPU-sized run for this CPU" in out and "or --scale cpu" in out

    quick = csac.Progress(total_steps=100, done_steps=0, device=torch.device("cpu"), suggest_scale=True)
    for step in range(1, 8):
        quick.step(step)
    out = capsys.readouterr().out
    assert "cost: " in out and "hint" not in out


@pytest.mark.parametrize("module", [bc, csac, mtcsac, hcsac], ids=lambda m: m.__name__)
def test_eta_of_a_resumed_run_is_from_this_processs_rate(module):
    """Resumed at step 30,000 of 32,000 and 1,000 steps done in 100 s: 10 steps/s, 1,000 left, 100 s; the whole
    run's average (earlier processes on other cores or threads) plays no part."""
    progress = module.Progress(total_steps=32_000, done_steps=30_000, device=torch.device("cpu"))
    progress.start -= 100.0
    assert progress.rate(31_000) == pytest.approx(10.0, rel=1e-3)
    assert progress.remaining_seconds(31_000) == pytest.approx(100.0, rel=1e-3)
    assert module.format_duration(progress.remaining_seconds(30_000)) == "?"  # nothing done yet: no rate


def test_hint_on_emulated_bf16_names_fp32_not_a_gpu(capsys):
    """bf16 at 2 s per update where fp32 takes 0.1 s: 10,000 updates are 5.6 h in bf16 but 17 min in fp32."""
    out = cost_output(csac.Progress(total_steps=10_007, done_steps=0, device=torch.device("cpu"),
                                    fp32_seconds=0.1), capsys)
    assert "hint: bf16 is emulated on this CPU; without --bf16 (fp32) the remaining updates take about 16.7 min" in out
    assert "GPU" not in out
    slow = cost_output(csac.Progress(total_steps=1_000_007, done_steps=0, device=torch.device("cpu"),
                                     suggest_scale=True, fp32_seconds=0.1), capsys)
    assert "in fp32 the remaining updates still take about 27.8 h: a GPU-sized run here" in slow
    assert "or --scale cpu" in slow


def test_a_slow_cpu_sized_run_is_not_called_gpu_sized(capsys):
    out = cost_output(csac.Progress(total_steps=30_007, done_steps=0, device=torch.device("cpu"), cpu_sized=True),
                      capsys)
    assert "hint: a CPU-sized run, slow here: other work may share this CPU (load average" in out
    assert "GPU" not in out
    assert csac.is_cpu_sized(csac.Args(hidden_dim=256, num_layers=2, batch_size=256))
    assert not csac.is_cpu_sized(csac.Args())


@pytest.mark.parametrize("module", [bc, csac, mtcsac, hcsac], ids=lambda m: m.__name__)
@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_scale_cpu_resolves_per_cpu_and_keeps_typed_flags(module, native, monkeypatch):
    monkeypatch.setattr(module, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    args = module.Args(scale="cpu")
    line = module.apply_scale(args, 100_000, cpu, typed={"scale"})
    assert (args.hidden_dim, args.num_layers, args.batch_size) == (256, 2, 256)
    assert args.bf16 is native and (("--bf16 " in line) if native else ("--no-bf16" in line))
    assert ("native here" in line) if native else ("no native bf16 here" in line)
    steps_per_epoch = 100_000 // 256
    # a budget of gradient steps, enough epochs to hold it, evaluations at fixed steps
    assert args.max_steps == module.CPU_SCALE_STEPS == 40_000 and f"--max-steps {args.max_steps}" in line
    assert module.CPU_SCALE_STEPS <= args.epochs * steps_per_epoch < module.CPU_SCALE_STEPS + steps_per_epoch
    assert args.eval_every_steps == module.CPU_SCALE_STEPS // module.CPU_SCALE_EVALUATIONS == 4000
    base_epochs = args.epochs
    if module is hcsac:
        assert args.relabel_every == round(args.epochs / module.CPU_SCALE_RELABELINGS)
    # a typed (longer) budget keeps the cadence of evaluations and relabelings: it continues the shorter run
    args = module.Args(scale="cpu", max_steps=60_000)
    line = module.apply_scale(args, 100_000, cpu, typed={"scale", "max_steps"})
    assert args.max_steps == 60_000 and 60_000 <= args.epochs * steps_per_epoch < 60_000 + steps_per_epoch
    assert args.eval_every_steps == 4000 and "typed, kept: --max-steps" in line
    if module is hcsac:
        assert args.relabel_every == round(base_epochs / module.CPU_SCALE_RELABELINGS)
    # --epochs typed alone is an epoch budget (as the paper's), evaluated every --eval-every epochs if typed
    args = module.Args(scale="cpu", epochs=5, eval_every=2)
    module.apply_scale(args, 100_000, cpu, typed={"scale", "epochs", "eval_every"})
    assert (args.max_steps, args.epochs, args.eval_every, args.eval_every_steps) == (None, 5, 2, None)
    # flags typed on the command line win; the budget follows a typed batch size
    typed = module.typed_flags(["--scale", "cpu", "--hidden-dim=64", "--batch-size", "512", "--no-bf16"])
    assert typed == {"scale", "hidden_dim", "batch_size", "bf16"}
    args = module.Args(scale="cpu", hidden_dim=64, batch_size=512, bf16=False)
    line = module.apply_scale(args, 100_000, cpu, typed)
    assert (args.hidden_dim, args.batch_size, args.bf16) == (64, 512, False) and args.num_layers == 2
    assert args.epochs == math.ceil(module.CPU_SCALE_STEPS / (100_000 // 512))
    assert "typed, kept: --batch-size --bf16 --hidden-dim" in line and "fp32, as typed" in line


@pytest.mark.parametrize("module", [bc, csac, mtcsac, hcsac], ids=lambda m: m.__name__)
def test_bf16_on_a_cpu_without_it_warns_with_both_costs(module, monkeypatch, capsys):
    monkeypatch.setattr(module, "native_bf16", lambda device: False)
    args = module.Args(hidden_dim=16, num_layers=1, batch_size=8, bf16=True)
    batch = (torch.randn(8, 24), *([torch.zeros(8, dtype=torch.long)] if module in (mtcsac, hcsac) else []),
             torch.rand(8, 6) * 2 - 1, torch.rand(8), torch.randn(8, 24))
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    fp32_seconds = module.warn_if_bf16_is_emulated(args, torch.device("cpu"), batch)
    assert torch.equal(torch.rand(3), expected_next)  # the throwaway learners left the RNG as it was
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("warning: this CPU (") and "has no native bf16" in line
    assert re.search(r"emulated: \d+ ms per update against \d+ ms in fp32", line) and fp32_seconds > 0
    monkeypatch.setattr(module, "native_bf16", lambda device: True)
    assert module.warn_if_bf16_is_emulated(args, torch.device("cpu"), batch) is None
    assert capsys.readouterr().out == ""


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


def test_a_step_budget_counts_only_the_epochs_it_holds():
    """The evaluation line's epoch total: --epochs, or under --max-steps the epoch the last step falls in."""
    import hcsac

    args = hcsac.Args(epochs=1000, max_steps=8000)
    assert hcsac.final_epoch(args, 1, 0, 398, 398) == 21  # 8000 steps of 398 end in epoch 21 (20 x 398 = 7960)
    assert hcsac.final_epoch(args, 5, 2000, 0, 400) == 20  # a bigger D* after a relabeling: fewer epochs
    assert hcsac.final_epoch(args, 20, 7900, 100, 400) == 20  # the rest of this epoch holds the budget
    assert hcsac.final_epoch(hcsac.Args(epochs=30), 3, 1000, 0, 400) == 30  # no step budget: --epochs
    assert hcsac.final_epoch(hcsac.Args(epochs=2, max_steps=10**6), 1, 0, 7, 7) == 2  # --epochs ends it first
    checkpoint = {"epoch": 18, "resume_at": {"next_begin": 512}}
    assert hcsac.stop_point(7558, checkpoint) == "gradient step 7558 (in epoch 19)"
    assert hcsac.stop_point(7560, {"epoch": 19}) == "gradient step 7560 (after epoch 19)"
