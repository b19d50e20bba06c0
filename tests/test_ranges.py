"""Bad input, second round: every numeric flag outside its meaningful range, and dataset values the method cannot
use, each refused before any work with one line naming the fault."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from conftest import TASK_FLAGS, random_rollouts, run_script

import bc
import collect_td3
import convert_utds
import csac
import hcsac
import mtcsac
import reproduce
import walker_data

# The ranges we mean, written out here so that a script whose range drifts fails.
COMMON = {"seed": "[0, 4294967295]", "epochs": "[1, inf)", "batch_size": "[1, inf)", "hidden_dim": "[1, inf)",
          "num_layers": "[1, inf)", "eval_every": "[1, inf)", "eval_episodes": "[1, inf)", "log_every": "[1, inf)",
          "max_steps": "[1, inf)", "eval_every_steps": "[1, inf)", "eval_workers": "[0, inf)"}
CQL = {**COMMON, "critic_lr": "(0, inf)", "actor_lr": "(0, inf)", "tau": "(0, 1]", "gamma": "[0, 1)",
       "cql_weight": "[0, inf)", "num_sampled_actions": "[1, inf)"}
EXPECTED = {
    bc: {**COMMON, "learning_rate": "(0, inf)"},
    csac: CQL,
    mtcsac: CQL,
    hcsac: {**CQL, "relabel_every": "[1, inf)", "relabel_top": "(0, 1]", "relabel_batch_size": "[1, inf)"},
    collect_td3: {"seed": "[0, 4294967295]", "total_timesteps": "[1000, inf)", "learning_starts": "[0, inf)",
                  "batch_size": "[1, inf)", "hidden_dim": "[1, inf)", "learning_rate": "(0, inf)",
                  "gamma": "[0, 1)", "tau": "(0, 1]", "policy_noise": "[0, inf)", "noise_clip": "[0, inf)",
                  "exploration_noise": "[0, inf)", "policy_frequency": "[1, inf)", "window_episodes": "[1, inf)",
                  "medium_replay_target": "[0, 1000]", "medium_target": "[0, 1000]",
                  "checkpoint_every": "[1000, inf)", "torch_threads": "[1, inf)"},
    convert_utds: {"reward_tolerance": "[0, inf)"},
    reproduce: {"seeds": "[0, 4294967295]", "workers": "[1, inf)", "gpus_per_run": "[0, inf)",
                "cpus_per_run": "(0, inf)", "ray_cpus": "[1, inf)"},
}
ALGORITHMS = (bc, csac, mtcsac, hcsac)


def ranges_of(module) -> dict[str, str]:
    from typing import get_type_hints

    hints = get_type_hints(module.Args, include_extras=True)
    return {name: meta.interval for name, hint in hints.items() for meta in getattr(hint, "__metadata__", ())
            if type(meta).__name__ == "Range"}


def outside_values(interval: str, integer: bool) -> list[float]:
    """Just outside each finite end of the interval, and NaN for float flags."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    step = 1 if integer else 0.5
    values = [low - step if interval[0] == "[" else low]
    if math.isfinite(high):
        values.append(high + step if interval[-1] == "]" else high)
    return [int(v) for v in values] if integer else values + [math.nan]


def cases():
    for module, expected in EXPECTED.items():
        defaults = module.Args.__dataclass_fields__
        for name, interval in expected.items():
            integer = isinstance(defaults[name].default, int) or name in ("seeds", "ray_cpus", "max_steps", "eval_every_steps", "eval_workers")
            for value in outside_values(interval, integer):
                yield pytest.param(module, name, interval, value, id=f"{module.__name__}-{name}={value}")


@pytest.mark.parametrize("module", EXPECTED, ids=lambda m: m.__name__)
def test_every_numeric_flag_has_the_range_we_mean(module):
    assert ranges_of(module) == EXPECTED[module]
    source = open(module.__file__).read()
    for name, interval in EXPECTED[module].items():  # the docstring beside the flag says it
        field_start = source.index(f"    {name}: Annotated[")
        assert f"in {interval}" in source[field_start:source.index('"""', source.index('"""', field_start) + 3)], name


@pytest.mark.parametrize("module,name,interval,value", cases())
def test_flag_outside_its_range_exits_with_one_line(module, name, interval, value, monkeypatch, tmp_path):
    flag = "--" + name.replace("_", "-")
    argv = [module.__file__, flag, str(value)]
    if module is convert_utds:
        argv += ["--src", str(tmp_path)]
    elif module in ALGORITHMS:
        argv += ["--data-dir", str(tmp_path)]  # no data there: a range error must come before any reading
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        module.main() if module in ALGORITHMS else module.main(module.tyro.cli(module.Args))
    message = str(exit_info.value.code)
    assert message.startswith(f"error: {flag} ") and message.endswith(f"is outside its range {interval}"), message
    assert "\n" not in message


@pytest.mark.parametrize("module", ALGORITHMS, ids=lambda m: m.__name__)
def test_range_ends_that_belong_to_the_range_are_accepted(module):
    for name, interval in EXPECTED[module].items():
        low, high = interval[1:-1].split(", ")
        inside = [float(low)] if interval[0] == "[" else []
        inside += [float(high)] if interval[-1] == "]" and high != "inf" else []
        for value in inside:
            default = module.Args.__dataclass_fields__[name].default
            kind = int if default is None else type(default)  # the optional flags are counts
            module.check_args(module.Args(**{name: kind(value)}))


@pytest.mark.parametrize("command", [
    ["csac.py", "--gamma", "1.5"], ["csac.py", "--tau", "0"], ["csac.py", "--cql-weight", "-10"],
    ["csac.py", "--critic-lr", "-1"], ["bc.py", "--learning-rate", "0"], ["mtcsac.py", "--actor-lr", "nan"],
    ["hcsac.py", "--relabel-top", "1.5"], ["data/collect_td3.py", "--tau", "2"],
    ["data/convert_utds.py", "--src", ".", "--reward-tolerance", "-1"], ["scripts/reproduce.py", "--workers", "0"],
    ["scripts/reproduce.py", "--seeds", "0", "-1"],
], ids=lambda c: " ".join(c))
def test_a_user_sees_one_line_and_a_non_zero_exit(command, tmp_path):
    result = run_script(command[0], *command[1:], cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "is outside its range" in result.stderr, result.stderr


# ------------------------------------------------------------------ dataset values
def scale_actions(d):
    d["actions"] *= 5


BAD_VALUES = {
    "actions outside [-1, 1]": (scale_actions, "'actions' outside [-1, 1] at row 0"),
    "integer actions": (lambda d: d.update(actions=np.sign(d["actions"]).astype(np.int64)),
                        "'actions' has dtype int64, expected floating point"),
    "reward above 1": (lambda d: d["rewards"].__setitem__(7, 1.5), "'rewards' outside [0, 1] at row 7"),
    "negative reward": (lambda d: d["rewards"].__setitem__(9, -0.2), "'rewards' outside [0, 1] at row 9"),
    "rewards_run outside": (lambda d: d["rewards_run"].__setitem__(11, 3.0), "'rewards_run' outside [0, 1] at row 11"),
    "rewards_walk outside": (lambda d: d["rewards_walk"].__setitem__(12, -1.0),
                             "'rewards_walk' outside [0, 1] at row 12"),
    "text actions": (lambda d: d.update(actions=d["actions"].astype(str)), "'actions' has dtype <U"),
    "timeouts not boolean": (lambda d: d.update(timeouts=d["timeouts"].astype(np.float32)),
                             "'timeouts' has dtype float32, expected bool"),
    "terminals not boolean": (lambda d: d.update(terminals=d["terminals"].astype(np.int8)),
                              "'terminals' has dtype int8, expected bool"),
    "timeout inside an episode": (lambda d: d["timeouts"].__setitem__(499, True),
                                  "'timeouts' must mark the last step of each 1000-step episode and nothing else; "
                                  "row 499 is True"),
    "missing episode end": (lambda d: d["timeouts"].__setitem__(999, False), "row 999 is False"),
}


def bad_file(tmp_path, case: str) -> str:
    data = random_rollouts("walk", 1, seed=0)
    data["rewards_walk"] = data["rewards_walk"].copy()  # its own column, apart from 'rewards'
    BAD_VALUES[case][0](data)
    path = tmp_path / "walker_walk_medium.npz"
    np.savez(path, **data)
    return str(path)


@pytest.mark.parametrize("case", BAD_VALUES)
@pytest.mark.parametrize("module", ALGORITHMS, ids=lambda m: m.__name__)
def test_algorithm_scripts_refuse_values_they_cannot_use(module, case, tmp_path):
    path = bad_file(tmp_path, case)
    with pytest.raises(module.DatasetError) as error:
        module.load_dataset(path)
    assert str(error.value).startswith(path) and BAD_VALUES[case][1] in str(error.value)


DATA_TOOL_CASES = [case for case in BAD_VALUES if "not boolean" not in case and case not in ("integer actions",
                                                                                            "text actions")]


@pytest.mark.parametrize("case", DATA_TOOL_CASES)  # the data tools already demand exact dtypes (test_data.py)
def test_data_tools_refuse_the_same_values(case, tmp_path):
    path = bad_file(tmp_path, case)
    with pytest.raises(walker_data.DatasetError) as error:
        walker_data.load_dataset(path)
    assert str(error.value).startswith(path) and BAD_VALUES[case][1] in str(error.value)


def test_scripts_and_describe_exit_with_one_line_on_bad_values(tmp_path):
    bad_file(tmp_path, "actions outside [-1, 1]")
    for command in (["bc.py", *TASK_FLAGS["bc.py"], "--data-dir", str(tmp_path)], ["data/describe.py", str(tmp_path)]):
        result = run_script(*command, cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "'actions' outside [-1, 1] at row 0" in result.stderr
