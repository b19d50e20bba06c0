"""scripts/determinism.py groups fresh runs by their exact final weights and says how far apart the groups are."""

import os
import subprocess
import sys

import torch

from conftest import ROOT

import determinism  # noqa: E402  (scripts/ is on sys.path through conftest)


def test_runs_are_grouped_by_exact_weights_most_common_first():
    same = {"actor.w": torch.tensor([1.0, 2.0]), "log_alpha": torch.tensor(0.5)}
    last_bit = {"actor.w": torch.tensor([1.0, 2.0]), "log_alpha": torch.nextafter(torch.tensor(0.5), torch.tensor(1.0))}
    far = {"actor.w": torch.tensor([1.0, 2.25]), "log_alpha": torch.tensor(0.5)}
    groups = determinism.group_runs([last_bit, same, far, same])
    assert [members for _, members, _ in groups] == [[1, 3], [0], [2]]
    assert [difference for _, _, difference in groups] == [0.0, 2.0 ** -24, 0.25]  # one fp32 ulp at 0.5
    assert groups[0][0] == determinism.fingerprint(same) != groups[1][0]


def test_two_fresh_bc_runs_end_with_the_same_bits():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "determinism.py"), "--script", "bc.py",
                             "--runs", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 distinct result(s)" in result.stdout and "| 2 of 2 | walk " in result.stdout
