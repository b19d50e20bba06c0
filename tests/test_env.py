"""The walker environment: dm_control's observation order, spaces, episode length, both tasks' rewards."""

import importlib

import numpy as np
import pytest
from dm_control import suite

import walker_data

# The data tools' environment and every algorithm script's own copy of it.
ENV_MODULES = ["walker_data", "bc", "csac", "mtcsac", "hcsac"]


def make(module_name: str, task: str, seed: int):
    module = importlib.import_module(module_name)
    return module.WalkerEnv(task, seed) if module_name == "walker_data" else module.make_env(task, seed)


@pytest.mark.parametrize("module_name", ENV_MODULES)
@pytest.mark.parametrize("task", ["walk", "run"])
def test_observation_order_equals_dm_control_flattening(module_name, task):
    env = make(module_name, task, seed=3)
    reference = suite.load("walker", task, task_kwargs={"random": 3}, environment_kwargs={"flat_observation": True})
    obs, _ = env.reset()
    expected = reference.reset().observation["observations"]
    np.testing.assert_allclose(obs, expected, rtol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, 6)
        obs, reward, terminated, truncated, _ = env.step(action)
        time_step = reference.step(action)
        np.testing.assert_allclose(obs, time_step.observation["observations"], rtol=1e-5, atol=1e-6)
        assert reward == pytest.approx(time_step.reward)
    assert obs.shape == (24,) and obs.dtype == np.float32
    # the layout the project documents: orientations (14), height (1), velocity (9)
    physics = reference.physics
    np.testing.assert_allclose(obs[14], physics.torso_height(), rtol=1e-6)


def test_spaces_and_episode_length():
    env = walker_data.WalkerEnv("walk", seed=0)
    assert env.observation_space.shape == (24,) and env.action_space.shape == (6,)
    assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    env.reset()
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(np.zeros(6))
        assert not terminated  # walker never terminates
        steps += 1
    assert steps == 1000


@pytest.mark.parametrize("task", ["walk", "run"])
def test_info_rewards_match_each_tasks_own_environment(task):
    """Both tasks' rewards come from the same physics: the other task's env, driven identically, agrees."""
    env = walker_data.WalkerEnv(task, seed=1)
    other_task = "run" if task == "walk" else "walk"
    other = walker_data.WalkerEnv(other_task, seed=1)
    env.reset(), other.reset()
    rng = np.random.default_rng(1)
    for _ in range(50):
        action = rng.uniform(-1, 1, 6)
        _, reward, _, _, info = env.step(action)
        _, other_reward, _, _, _ = other.step(action)
        assert info[f"rewards_{task}"] == pytest.approx(reward)
        assert info[f"rewards_{other_task}"] == pytest.approx(other_reward)


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task 'jump'"):
        walker_data.WalkerEnv("jump")
