"""Online TD3 on one walker task that writes that task's two offline datasets (CleanRL-style, one file).

* medium-replay: the whole replay buffer (random seed frames included) up to the first evaluation whose
  mean return reaches the task's medium target.
* medium: `--medium-episodes` full episodes of that frozen policy with its exploration noise.

Every transition stores the reward of both tasks, computed from the same physics state, so relabeling a
transition to another task is an exact lookup.

    python data/collect_td3.py --task walk --seed 0
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from walker_data import (ACT_DIM, EPISODE_LEN, MEDIUM_TARGETS, OBS_DIM, TASKS, Range, WalkerEnv, check_ranges,  # noqa: E402
                         save_dataset)


@dataclass
class Args:
    task: str = "walk"
    """walker task: walk or run"""
    seed: Annotated[int, Range("[0, 4294967295]")] = 0
    """in [0, 4294967295]"""
    out_dir: str = "data"
    """where walker_{task}_{medium,medium-replay}.npz are written"""
    total_timesteps: Annotated[int, Range("[1, inf)")] = 1_000_000
    """give up (non-zero exit) if the medium target is not reached within this many env steps, in [1, inf)"""
    learning_starts: Annotated[int, Range("[0, inf)")] = 10_000
    """random-action seed frames before learning (they are part of medium-replay), in [0, inf)"""
    buffer_size: Annotated[int, Range("[1, inf)")] = 1_000_000
    """in [1, inf)"""
    batch_size: Annotated[int, Range("[1, inf)")] = 256
    """in [1, inf)"""
    hidden_dim: Annotated[int, Range("[1, inf)")] = 256
    """in [1, inf)"""
    learning_rate: Annotated[float, Range("(0, inf)")] = 3e-4
    """in (0, inf)"""
    gamma: Annotated[float, Range("[0, 1)")] = 0.99
    """in [0, 1)"""
    tau: Annotated[float, Range("(0, 1]")] = 0.005
    """in (0, 1]"""
    policy_noise: Annotated[float, Range("[0, inf)")] = 0.2
    """in [0, inf)"""
    noise_clip: Annotated[float, Range("[0, inf)")] = 0.5
    """in [0, inf)"""
    exploration_noise: Annotated[float, Range("[0, inf)")] = 0.1
    """in [0, inf)"""
    policy_frequency: Annotated[int, Range("[1, inf)")] = 2
    """in [1, inf)"""
    eval_every: Annotated[int, Range("[1000, inf)")] = 5_000
    """env steps between evaluations (a multiple of the 1000-step episode), in [1000, inf)"""
    eval_episodes: Annotated[int, Range("[1, inf)")] = 5
    """in [1, inf)"""
    medium_episodes: Annotated[int, Range("[1, inf)")] = 50
    """in [1, inf)"""
    medium_target_min: Annotated[float | None, Range("[0, 1000]")] = None
    """lower end of the medium target (default: walk 500, run 250), in [0, 1000]"""
    medium_target_max: Annotated[float | None, Range("[0, 1000]")] = None
    """upper end, only reported (default: walk 700, run 380), in [0, 1000]"""
    torch_threads: Annotated[int, Range("[1, inf)")] = 1
    """one thread each lets the two tasks collect side by side on a 2-core machine, in [1, inf)"""


class Actor(nn.Module):
    def __init__(self, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBS_DIM, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, ACT_DIM), nn.Tanh(),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class QNetwork(nn.Module):
    def __init__(self, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBS_DIM + ACT_DIM, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


class Buffer:
    """Replay buffer that is also the medium-replay dataset: nothing is ever overwritten."""

    def __init__(self, capacity: int):
        self.obs = np.zeros((capacity, OBS_DIM), np.float32)
        self.next_obs = np.zeros((capacity, OBS_DIM), np.float32)
        self.actions = np.zeros((capacity, ACT_DIM), np.float32)
        self.rewards = {task: np.zeros(capacity, np.float32) for task in TASKS}
        self.timeouts = np.zeros(capacity, bool)
        self.size = 0

    def add(self, obs, action, next_obs, info, timeout):
        i = self.size
        self.obs[i], self.actions[i], self.next_obs[i], self.timeouts[i] = obs, action, next_obs, timeout
        for task in TASKS:
            self.rewards[task][i] = info[f"rewards_{task}"]
        self.size += 1

    def sample(self, batch_size: int, task: str):
        idx = np.random.randint(0, self.size, batch_size)
        as_tensor = lambda x: torch.as_tensor(x[idx])  # noqa: E731
        return as_tensor(self.obs), as_tensor(self.actions), as_tensor(self.rewards[task]), as_tensor(self.next_obs)

    def as_dataset(self, task: str) -> dict[str, np.ndarray]:
        n = self.size
        return {
            "observations": self.obs[:n], "actions": self.actions[:n], "next_observations": self.next_obs[:n],
            "rewards": self.rewards[task][:n], "terminals": np.zeros(n, bool), "timeouts": self.timeouts[:n],
            **{f"rewards_{t}": self.rewards[t][:n] for t in TASKS},
        }


def rollout(actor: Actor, env: WalkerEnv, noise: float, buffer: Buffer | None = None) -> float:
    """One full episode; with `buffer`, every transition is stored. Returns the episode return."""
    obs, _ = env.reset()
    episode_return, done = 0.0, False
    while not done:
        with torch.no_grad():
            action = actor(torch.as_tensor(obs)).numpy()
        if noise > 0:
            action = np.clip(action + np.random.normal(0, noise, ACT_DIM), -1, 1).astype(np.float32)
        next_obs, reward, _, done, info = env.step(action)
        if buffer is not None:
            buffer.add(obs, action, next_obs, info, done)
        episode_return += reward
        obs = next_obs
    return episode_return


def main(args: Args) -> None:
    check_ranges(args)
    if args.task not in TASKS:
        sys.exit(f"error: unknown task {args.task!r}; expected one of {TASKS}")
    if args.eval_every % EPISODE_LEN:
        sys.exit(f"error: --eval-every must be a multiple of {EPISODE_LEN} so that datasets hold whole episodes")
    target_min = args.medium_target_min if args.medium_target_min is not None else MEDIUM_TARGETS[args.task][0]
    target_max = args.medium_target_max if args.medium_target_max is not None else MEDIUM_TARGETS[args.task][1]
    torch.set_num_threads(args.torch_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    run_name = f"collect_td3__{args.task}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    env, eval_env = WalkerEnv(args.task, seed=args.seed), WalkerEnv(args.task, seed=args.seed + 10_000)
    actor, qf1, qf2 = Actor(args.hidden_dim), QNetwork(args.hidden_dim), QNetwork(args.hidden_dim)
    actor_target, qf1_target, qf2_target = Actor(args.hidden_dim), QNetwork(args.hidden_dim), QNetwork(args.hidden_dim)
    for target, source in ((actor_target, actor), (qf1_target, qf1), (qf2_target, qf2)):
        target.load_state_dict(source.state_dict())
    q_optimizer = torch.optim.Adam([*qf1.parameters(), *qf2.parameters()], lr=args.learning_rate)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate)
    buffer = Buffer(min(args.buffer_size, args.total_timesteps))

    start = last_line = time.time()
    # Progress from the first step: a bar on a terminal, a plain line a minute otherwise (log files stay readable).
    bar = tqdm(total=args.total_timesteps, unit="step", file=sys.stdout, disable=not sys.stdout.isatty())
    obs, _ = env.reset()
    reached = None
    for global_step in range(1, args.total_timesteps + 1):
        bar.update()
        if bar.disable and time.time() - last_line >= 60:
            print(f"step {global_step} | {global_step / (time.time() - start):.0f} steps/s", flush=True)
            last_line = time.time()
        if global_step <= args.learning_starts:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs)).numpy()
            action = np.clip(action + np.random.normal(0, args.exploration_noise, ACT_DIM), -1, 1).astype(np.float32)
        next_obs, _, _, done, info = env.step(action)
        buffer.add(obs, action, next_obs, info, done)
        obs = env.reset()[0] if done else next_obs

        if global_step > args.learning_starts:
            b_obs, b_act, b_rew, b_next = buffer.sample(args.batch_size, args.task)
            with torch.no_grad():
                noise = (torch.randn_like(b_act) * args.policy_noise).clamp(-args.noise_clip, args.noise_clip)
                next_act = (actor_target(b_next) + noise).clamp(-1, 1)
                # No terminal mask: walker episodes end by time limit only.
                target_q = b_rew + args.gamma * torch.min(qf1_target(b_next, next_act), qf2_target(b_next, next_act))
            q_loss = F.mse_loss(qf1(b_obs, b_act), target_q) + F.mse_loss(qf2(b_obs, b_act), target_q)
            q_optimizer.zero_grad()
            q_loss.backward()
            q_optimizer.step()
            if global_step % args.policy_frequency == 0:
                actor_loss = -qf1(b_obs, actor(b_obs)).mean()
                actor_optimizer.zero_grad()
                actor_loss.backward()
                actor_optimizer.step()
                with torch.no_grad():
                    for target, source in ((actor_target, actor), (qf1_target, qf1), (qf2_target, qf2)):
                        for tp, sp in zip(target.parameters(), source.parameters()):
                            tp.lerp_(sp, args.tau)

        if global_step % args.eval_every == 0:
            returns = [rollout(actor, eval_env, noise=0.0) for _ in range(args.eval_episodes)]
            mean_return = float(np.mean(returns))
            sps = int(global_step / (time.time() - start))
            writer.add_scalar("eval/return", mean_return, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            bar.write(f"step={global_step} eval_return={mean_return:.1f} SPS={sps}", file=sys.stdout)
            sys.stdout.flush()
            if mean_return >= target_min:
                reached = mean_return
                break
    bar.close()
    if reached is None:
        sys.exit(f"error: evaluation return never reached {target_min} within {args.total_timesteps} steps")
    if reached > target_max:
        print(f"warning: the snapshot's return {reached:.1f} overshoots the medium range [{target_min}, {target_max}]")
    collection_seconds = time.time() - start

    medium = Buffer(args.medium_episodes * EPISODE_LEN)
    medium_returns = [rollout(actor, env, args.exploration_noise, medium) for _ in range(args.medium_episodes)]
    print(f"medium: {args.medium_episodes} episodes, mean return {np.mean(medium_returns):.1f}", flush=True)

    paths = {}
    for quality, source in (("medium-replay", buffer), ("medium", medium)):
        paths[quality] = os.path.join(args.out_dir, f"walker_{args.task}_{quality}.npz")
        save_dataset(paths[quality], source.as_dataset(args.task))
    provenance = {
        "command": "python data/collect_td3.py " + " ".join(sys.argv[1:]),
        "args": asdict(args),
        "env_steps": global_step,
        "snapshot_eval_return": reached,
        "medium_target": [target_min, target_max],
        "medium_rollout_mean_return": float(np.mean(medium_returns)),
        "collection_seconds": collection_seconds,
        "total_seconds": time.time() - start,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     **_dm_versions()},
        "files": paths,
    }
    with open(os.path.join(args.out_dir, f"walker_{args.task}_collection.json"), "w") as f:
        json.dump(provenance, f, indent=2)
    writer.close()
    print(f"wrote {paths['medium-replay']} ({buffer.size} rows) and {paths['medium']} ({medium.size} rows) "
          f"in {provenance['total_seconds']:.0f} s")


def _dm_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("mujoco", "dm_control", "gymnasium")}


if __name__ == "__main__":
    main(tyro.cli(Args))
