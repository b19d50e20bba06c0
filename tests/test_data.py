"""Shipped datasets, the UTDS converter and the loader's messages on bad files (the collector: test_collect.py)."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import ROOT, random_rollouts, run_script

import walker_data
from walker_data import DatasetError, load_dataset

SHIPPED = [(task, quality) for task in walker_data.TASKS for quality in ("medium", "medium-replay")]


def check_dataset(data: dict, task: str) -> None:
    n = len(data["observations"])
    assert n > 0 and n % 1000 == 0
    np.testing.assert_array_equal(np.flatnonzero(data["timeouts"]), np.arange(999, n, 1000))  # one per episode
    assert not data["terminals"].any()
    for key in ("rewards", "rewards_walk", "rewards_run"):
        assert data[key].min() >= 0 and data[key].max() <= 1, key
    np.testing.assert_array_equal(data["rewards"], data[f"rewards_{task}"])
    # consecutive transitions of an episode chain: s'_t = s_{t+1}
    within = ~data["timeouts"][:-1]
    np.testing.assert_array_equal(data["next_observations"][:-1][within], data["observations"][1:][within])


@pytest.mark.parametrize("task,quality", SHIPPED)
def test_shipped_dataset_is_valid(task, quality):
    data = load_dataset(os.path.join(ROOT, "data", f"walker_{task}_{quality}.npz"), task)
    check_dataset(data, task)
    if quality == "medium":
        assert len(data["observations"]) >= 50_000  # at least 50 full episodes


@pytest.mark.parametrize("task,quality", SHIPPED)
def test_shipped_dataset_is_its_collections_window_and_like_the_seeds(task, quality):
    """Each file is the window of 51 consecutive training episodes its collection log names: the file's episode
    returns are the logged training returns of those episodes, in order, and their mean is within 3% of the
    seed data's mean return for that file, whose reaching defined the window."""
    with open(os.path.join(ROOT, "data", f"walker_{task}_collection.json")) as f:
        log = json.load(f)
    if "windows" not in log:
        pytest.skip(f"walker {task}: the shipped files are still the earlier collector's; its TD3 collection is under way")
    window = log["windows"][quality]
    data = load_dataset(os.path.join(ROOT, "data", f"walker_{task}_{quality}.npz"), task)
    returns = np.add.reduceat(data["rewards"].astype(np.float64), np.arange(0, len(data["rewards"]), 1000))
    with open(os.path.join(ROOT, "data", f"walker_{task}_training_returns.csv")) as f:
        logged = {int(row["episode"]): float(row["return"]) for row in csv.DictReader(f)}
    episodes = range(window["first_episode"], window["last_episode"] + 1)
    assert len(episodes) == len(returns) == 51
    np.testing.assert_allclose(returns, [logged[e] for e in episodes], rtol=1e-5)
    target = walker_data.SEED_RETURNS[task][quality]
    assert returns.mean() >= target and abs(returns.mean() - target) <= 0.03 * target
    assert window["mean_return"] == pytest.approx(returns.mean(), rel=1e-5)
    if quality == "medium":  # no episode in both files
        assert window["first_episode"] > log["windows"]["medium-replay"]["last_episode"]


def test_shipped_datasets_fit_the_size_budget():
    total = sum(os.path.getsize(os.path.join(ROOT, "data", f"walker_{t}_{q}.npz")) for t, q in SHIPPED)
    assert total <= 100 * 2**20


def write_utds_episode(path, task: str, seed: int) -> dict:
    """One episode in the course/UTDS layout: index 0 is the reset step with a dummy action and reward."""
    env = walker_data.WalkerEnv(task, seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    episode = {"observation": [obs], "action": [np.zeros(6, np.float32)], "reward": [[0.0]], "discount": [[1.0]],
               "physics": [env.physics.get_state()]}
    other = {"walk": [], "run": []}
    for _ in range(1000):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        obs, reward, _, _, info = env.step(action)
        for key, value in (("observation", obs), ("action", action), ("reward", [reward]), ("discount", [1.0]),
                           ("physics", env.physics.get_state())):
            episode[key].append(value)
        for name in other:
            other[name].append(info[f"rewards_{name}"])
    np.savez(path, **{key: np.array(value, np.float32) for key, value in episode.items()})
    return {"episode": episode, "rewards": other}


def test_converter_recomputes_both_rewards(tmp_path):
    src = tmp_path / "walker_run-td3-medium" / "data"
    src.mkdir(parents=True)
    written = [write_utds_episode(src / f"episode_{i:06d}_1000.npz", "run", seed=i) for i in range(2)]
    result = run_script("data/convert_utds.py", "--src", str(src), cwd=tmp_path, fresh=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # a fresh interpreter prints nothing else (the other tests' runs are forked)
    data = load_dataset(str(tmp_path / "data" / "walker_run_medium.npz"), "run")  # task and quality from the path
    check_dataset(data, "run")
    first = written[0]["episode"]
    np.testing.assert_allclose(data["observations"][:1000], np.array(first["observation"][:-1]))
    np.testing.assert_allclose(data["actions"][:1000], np.array(first["action"][1:]))
    np.testing.assert_allclose(data["next_observations"][:1000], np.array(first["observation"][1:]))
    for name in ("walk", "run"):
        expected = np.concatenate([w["rewards"][name] for w in written])
        np.testing.assert_allclose(data[f"rewards_{name}"], expected, atol=1e-6)


def test_converter_refuses_the_wrong_task(tmp_path):
    src = tmp_path / "episodes"
    src.mkdir()
    write_utds_episode(src / "episode_000000_1000.npz", "walk", seed=0)
    result = run_script("data/convert_utds.py", "--src", str(src), "--task", "run", "--out", "x.npz", cwd=tmp_path)
    assert result.returncode != 0
    assert "differ from those recomputed" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture()
def good_dataset():
    return random_rollouts("walk", 1, seed=0)


BAD_FILES = {
    "missing key": (lambda d: d.pop("next_observations"), "missing key(s) ['next_observations']"),
    "wrong shape": (lambda d: d.update(observations=d["observations"][:, :20]), "'observations' has shape (1000, 20)"),
    "NaN": (lambda d: d["rewards"].__setitem__(5, np.nan), "'rewards' contains NaN or inf"),
    "wrong dtype": (lambda d: d.update(actions=d["actions"].astype(np.float64)), "'actions' has dtype float64"),
}


@pytest.mark.parametrize("fault", BAD_FILES)
def test_loader_names_the_file_and_the_fault(tmp_path, good_dataset, fault):
    corrupt, message = BAD_FILES[fault]
    corrupt(good_dataset)
    path = str(tmp_path / "bad.npz")
    np.savez(path, **good_dataset)
    with pytest.raises(DatasetError) as error:
        load_dataset(path)
    assert str(error.value).startswith(path) and message in str(error.value)


def test_loader_on_truncated_and_missing_files(tmp_path, good_dataset):
    path = tmp_path / "truncated.npz"
    walker_data.save_dataset(str(path), good_dataset)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="not a readable .npz file"):
        load_dataset(str(path))
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_dataset(str(tmp_path / "absent.npz"))
