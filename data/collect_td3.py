"""Online TD3 on one walker task that keeps every training episode and cuts the task's two offline datasets
from that one run (CleanRL-style TD3, one file).

Like the report's data (UTDS's TD3 "from the replay buffer when training an online TD3 agent"), both files are
windows of `--window-episodes` (51) consecutive *training* episodes, exploration noise on:

* medium-replay: the first window whose mean return reaches the medium-replay target;
* medium: the first window after it (no shared episode) whose mean return reaches the medium target.

The targets default to the seed data's mean returns (walk 929.8 / 962.8, run 251.5 / 318.4). Every transition
stores the reward of both tasks, computed from the same physics state, so relabeling is an exact lookup.

    python data/collect_td3.py --task walk --seed 0             # runs until both windows exist (or the budget)
    python data/collect_td3.py --task walk --seed 0 --resume    # after SIGTERM, Ctrl-C or SIGKILL

A collection takes hours on a CPU: it checkpoints at episode ends every `--checkpoint-every` env steps. The
checkpoint is small enough to commit (networks, optimisers, RNG states, the episode log, and the buffer as
its actions and each episode's initial physics state): `--resume` rebuilds the buffer by replaying those
actions in MuJoCo, checks that every replayed episode return equals the logged one bit for bit, and continues
to exactly the files an uninterrupted run writes.
"""

from __future__ import annotations

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # MKL's matmuls: the same bits for any thread count

import csv
import io
import json
import math
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from csac import code_version, cpu_description, format_duration, package_versions  # noqa: E402  (bookkeeping)
from walker_data import (ACT_DIM, EPISODE_LEN, OBS_DIM, SEED_RETURNS, TASKS, Range, WalkerEnv,  # noqa: E402
                         atomic_write_bytes, check_ranges, save_dataset)

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on a signal after a checkpoint; --resume continues


@dataclass
class Args:
    task: str = "walk"
    """walker task: walk or run"""
    seed: Annotated[int, Range("[0, 4294967295]")] = 0
    """in [0, 4294967295]"""
    out_dir: str = "data"
    """where walker_{task}_{medium,medium-replay}.npz, the collection log and the training returns are written"""
    total_timesteps: Annotated[int, Range("[1000, inf)")] = 1_000_000
    """env-step budget: give up (non-zero exit) if the windows are not found by then; may grow on --resume,
    in [1000, inf)"""
    learning_starts: Annotated[int, Range("[0, inf)")] = 10_000
    """random-action seed frames before learning, in [0, inf)"""
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
    """target policy smoothing noise, in [0, inf)"""
    noise_clip: Annotated[float, Range("[0, inf)")] = 0.5
    """in [0, inf)"""
    exploration_noise: Annotated[float, Range("[0, inf)")] = 0.1
    """Gaussian action noise while collecting (kept in the data), in [0, inf)"""
    policy_frequency: Annotated[int, Range("[1, inf)")] = 2
    """critic updates per actor update, in [1, inf)"""
    window_episodes: Annotated[int, Range("[1, inf)")] = 51
    """training episodes per dataset file (the seed data's 51), in [1, inf)"""
    medium_replay_target: Annotated[float | None, Range("[0, 1000]")] = None
    """mean return the medium-replay window must reach (default: the seed data's, walk 929.8, run 251.5), in [0, 1000]"""
    medium_target: Annotated[float | None, Range("[0, 1000]")] = None
    """mean return the medium window must reach (default: the seed data's, walk 962.8, run 318.4), in [0, 1000]"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast for the update; auto: bf16 only where the CPU has it natively (emulated it is ~16x slower)"""
    checkpoint: str | None = None
    """checkpoint file (default: runs/collect_td3/walker_{task}_seed{seed}.pt)"""
    checkpoint_every: Annotated[int, Range("[1000, inf)")] = 25_000
    """env steps between checkpoints, rounded up to an episode end, in [1000, inf)"""
    resume: bool = False
    """continue from --checkpoint (the flags that define the run must match it)"""
    torch_threads: Annotated[int, Range("[1, inf)")] = 1
    """one thread each lets the two tasks collect side by side on a 2-core machine, in [1, inf)"""


# Flags that may differ between a checkpoint and its --resume: none of them changes what is computed.
RESUMABLE_CHANGES = {"out_dir", "total_timesteps", "checkpoint", "checkpoint_every", "resume", "torch_threads"}


class UsageError(Exception):
    """Bad input or state: reported as one line and a non-zero exit."""


# ---------------------------------------------------------------------------------------------- networks
class Actor(nn.Module):
    def __init__(self, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBS_DIM, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, ACT_DIM), nn.Tanh(),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class TwinQ(nn.Module):
    """TD3's two critics as one ensemble: each layer is one batched matmul over both members instead of two
    separate passes (the same function as two nn.Linear MLPs, initialised as nn.Linear is)."""

    def __init__(self, hidden_dim: int, members: int = 2):
        super().__init__()
        sizes = [OBS_DIM + ACT_DIM, hidden_dim, hidden_dim, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default init for weights and biases
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, act: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Q-values [members, batch]; with `member`, that critic's alone [batch] (the actor loss uses Q1)."""
        x = torch.cat([obs, act], -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if member is None:
                x = torch.baddbmm(b, x.expand(w.shape[0], *x.shape) if i == 0 else x, w)
            else:
                x = torch.addmm(b[member], x, w[member])
            x = x if i == last else F.relu(x)
        return x.squeeze(-1)


# ------------------------------------------------------------------------------------------------ buffer
class Buffer:
    """The replay buffer, never overwritten: every training episode stays, and the datasets are cut from it."""

    def __init__(self, capacity: int):
        self.obs = np.zeros((capacity, OBS_DIM), np.float32)
        self.next_obs = np.zeros((capacity, OBS_DIM), np.float32)
        self.actions = np.zeros((capacity, ACT_DIM), np.float32)
        self.rewards = {task: np.zeros(capacity, np.float32) for task in TASKS}
        self.size = 0

    def add(self, obs, action, next_obs, info) -> None:
        i = self.size
        self.obs[i], self.actions[i], self.next_obs[i] = obs, action, next_obs
        for task in TASKS:
            self.rewards[task][i] = info[f"rewards_{task}"]
        self.size += 1

    def sample(self, batch_size: int, task: str):
        idx = np.random.randint(0, self.size, batch_size)
        as_tensor = lambda x: torch.as_tensor(x[idx])  # noqa: E731
        return as_tensor(self.obs), as_tensor(self.actions), as_tensor(self.rewards[task]), as_tensor(self.next_obs)

    def episodes(self, first: int, count: int, task: str) -> dict[str, np.ndarray]:
        """Whole episodes first..first+count-1 as a D4RL dataset with both tasks' rewards."""
        rows = slice(first * EPISODE_LEN, (first + count) * EPISODE_LEN)
        n = count * EPISODE_LEN
        return {
            "observations": self.obs[rows], "actions": self.actions[rows], "next_observations": self.next_obs[rows],
            "rewards": self.rewards[task][rows], "terminals": np.zeros(n, bool),
            "timeouts": (np.arange(n) + 1) % EPISODE_LEN == 0,
            **{f"rewards_{t}": self.rewards[t][rows] for t in TASKS},
        }


# ------------------------------------------------------------------------------------------------ update
def td3_update(args: Args, nets: dict, optimizers: dict, batch, update_actor: bool, autocast) -> None:
    """One TD3 step (Fujimoto et al. 2018): clipped double-Q target with target policy smoothing; the actor and
    the target networks every `policy_frequency` critic steps."""
    actor, qf, actor_target, qf_target = nets["actor"], nets["qf"], nets["actor_target"], nets["qf_target"]
    obs, act, rew, next_obs = batch
    with torch.no_grad(), autocast():
        noise = (torch.randn_like(act) * args.policy_noise).clamp(-args.noise_clip, args.noise_clip)
        next_act = (actor_target(next_obs) + noise).clamp(-1, 1)
        # No terminal mask: walker episodes end by the time limit only.
        target_q = rew + args.gamma * qf_target(next_obs, next_act).min(0).values.float()
    with autocast():
        q = qf(obs, act).float()
    q_loss = F.mse_loss(q, target_q.expand_as(q), reduction="none").mean(1).sum()  # Q1 loss + Q2 loss
    optimizers["qf"].zero_grad(set_to_none=True)
    q_loss.backward()
    optimizers["qf"].step()
    if update_actor:
        with autocast():
            actor_loss = -qf(obs, actor(obs), member=0).float().mean()
        optimizers["actor"].zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(actor.parameters()))  # the critic's weight gradients are not needed
        optimizers["actor"].step()
        with torch.no_grad():
            for target, source in ((actor_target, actor), (qf_target, qf)):
                torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), args.tau)


def find_window(returns: list[float], size: int, target: float, start: int) -> int | None:
    """First index i >= start with mean(returns[i:i+size]) >= target (sums in float64, in episode order)."""
    for i in range(start, len(returns) - size + 1):
        if math.fsum(returns[i:i + size]) / size >= target:
            return i
    return None


def best_window(returns: list[float], size: int, start: int) -> float | None:
    means = [math.fsum(returns[i:i + size]) / size for i in range(start, len(returns) - size + 1)]
    return max(means) if means else None


# ------------------------------------------------------------------------------------------------ main
def main(args: Args) -> None:
    check_ranges(args)
    if args.task not in TASKS:
        raise UsageError(f"unknown task {args.task!r}; expected one of {TASKS}")
    if args.medium_replay_target is None:
        args.medium_replay_target = SEED_RETURNS[args.task]["medium-replay"]
    if args.medium_target is None:
        args.medium_target = SEED_RETURNS[args.task]["medium"]
    if args.checkpoint is None:
        args.checkpoint = os.path.join("runs", "collect_td3", f"walker_{args.task}_seed{args.seed}.pt")
    torch.set_num_threads(args.torch_threads)
    checkpoint = load_checkpoint(args) if args.resume else None
    if checkpoint is None and os.path.exists(args.checkpoint):
        raise UsageError(f"{args.checkpoint}: a checkpoint of an earlier collection exists; pass --resume to "
                         f"continue it, or remove it to start over")
    if checkpoint is not None and checkpoint["finished"]:
        raise UsageError(f"{args.checkpoint}: this collection already finished; its files are in {args.out_dir}")
    precision = checkpoint["precision"] if checkpoint else resolve_precision(args.precision)
    autocast = (lambda: torch.autocast("cpu", torch.bfloat16)) if precision == "bf16" else _no_autocast
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    env = WalkerEnv(args.task, seed=args.seed)
    nets = {"actor": Actor(args.hidden_dim), "qf": TwinQ(args.hidden_dim)}
    nets["actor_target"], nets["qf_target"] = Actor(args.hidden_dim), TwinQ(args.hidden_dim)
    nets["actor_target"].load_state_dict(nets["actor"].state_dict())
    nets["qf_target"].load_state_dict(nets["qf"].state_dict())
    optimizers = {name: torch.optim.Adam(nets[name].parameters(), lr=args.learning_rate, fused=True)
                  for name in ("actor", "qf")}
    buffer = Buffer(args.total_timesteps)
    log: list[dict] = []  # one row per training episode
    reset_states: list[np.ndarray] = []  # each episode's initial physics state: with the actions, the buffer
    elapsed = 0.0  # wall seconds of earlier sittings
    sittings = []  # where each part of the collection ran: a resume may land on another machine
    if checkpoint is not None:
        log, reset_states, elapsed = checkpoint["log"], list(checkpoint["reset_states"].numpy()), checkpoint["elapsed"]
        sittings = checkpoint["sittings"]
        if len(log) * EPISODE_LEN > args.total_timesteps:
            raise UsageError(f"{args.checkpoint}: holds {len(log) * EPISODE_LEN} env steps, more than "
                             f"--total-timesteps {args.total_timesteps}")
        print(f"resuming {args.checkpoint}: replaying {len(log)} episodes to rebuild the buffer", flush=True)
        replay_buffer(args, buffer, checkpoint["actions"].numpy(), reset_states, log)
        for name, net in nets.items():
            net.load_state_dict(checkpoint["nets"][name])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        set_rng_states(env, checkpoint["rng"])
    print(f"collect_td3: walker-{args.task}, seed {args.seed}, {precision}, budget {args.total_timesteps} env steps; "
          f"windows of {args.window_episodes} episodes reaching {args.medium_replay_target} (medium-replay) and "
          f"{args.medium_target} (medium)", flush=True)

    stop = {"signal": None}

    def on_signal(signum, _frame):
        if stop["signal"] is not None:  # a second signal: leave now, the last checkpoint stands
            sys.exit(128 + signum)
        stop["signal"] = signum
        print(f"{signal.Signals(signum).name}: checkpointing at the end of this episode (again to quit now)",
              flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sittings.append({"from_env_step": buffer.size, "code": code_version(), "cpu": cpu_description(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def checkpoint_now(finished: bool = False) -> None:
        save_checkpoint(args, precision, nets, optimizers, buffer, reset_states, log, env,
                        elapsed + time.time() - start, sittings, finished)
        write_training_returns(os.path.join(args.out_dir, f"walker_{args.task}_training_returns.csv"), log)

    returns = [row["return"] for row in log]
    size = args.window_episodes
    mr_start = find_window(returns, size, args.medium_replay_target, 0)
    medium_start = None if mr_start is None else find_window(returns, size, args.medium_target, mr_start + size)
    start = time.time()
    progress = Progress(args.total_timesteps, buffer.size)
    last_checkpoint = buffer.size
    while medium_start is None and buffer.size + EPISODE_LEN <= args.total_timesteps:
        obs, _ = env.reset()
        reset_states.append(env.physics.get_state().copy())
        episode_return = {task: 0.0 for task in TASKS}
        for _ in range(EPISODE_LEN):
            if buffer.size < args.learning_starts:
                action = env.action_space.sample()
            else:
                with torch.no_grad():
                    action = nets["actor"](torch.as_tensor(obs)).numpy()
                action = (action + np.random.normal(0, args.exploration_noise, ACT_DIM)).clip(-1, 1).astype(np.float32)
            next_obs, reward, _, _, info = env.step(action)
            buffer.add(obs, action, next_obs, info)
            for task in TASKS:
                episode_return[task] += info[f"rewards_{task}"]
            obs = next_obs
            if buffer.size > args.learning_starts:
                td3_update(args, nets, optimizers, buffer.sample(args.batch_size, args.task),
                           buffer.size % args.policy_frequency == 0, autocast)
            progress.step(buffer.size)
        log.append({"episode": len(log), "env_step": buffer.size, "return": episode_return[args.task],
                    **{f"return_{task}": episode_return[task] for task in TASKS}})
        returns.append(episode_return[args.task])
        found = ""
        if mr_start is None:
            mr_start = find_window(returns, size, args.medium_replay_target, max(0, len(returns) - size))
            found = "" if mr_start is None else f"; medium-replay window: episodes {mr_start}-{mr_start + size - 1}"
        if mr_start is not None:
            medium_start = find_window(returns, size, args.medium_target, max(mr_start + size, len(returns) - size))
            found += "" if medium_start is None else f"; medium window: episodes {medium_start}-{medium_start + size - 1}"
        progress.episode(len(log) - 1, buffer.size, episode_return[args.task], returns[-size:], found)
        if stop["signal"] is not None:
            checkpoint_now()
            progress.close()
            print(f"checkpoint at env step {buffer.size} in {args.checkpoint}; continue with --resume", flush=True)
            sys.exit(PREEMPTED_EXIT)
        if buffer.size - last_checkpoint >= args.checkpoint_every and medium_start is None:
            checkpoint_now()
            last_checkpoint = buffer.size
    progress.close()
    if medium_start is None:
        checkpoint_now()  # a larger --total-timesteps with --resume continues from here
        missing = "medium-replay" if mr_start is None else "medium"
        target = args.medium_replay_target if mr_start is None else args.medium_target
        best = best_window(returns, size, 0 if mr_start is None else mr_start + size)
        reached = "no full window yet" if best is None else f"its best window's mean return is {best:.1f}"
        raise UsageError(f"walker-{args.task}: no {size}-episode {missing} window reached {target} within "
                         f"{buffer.size} env steps ({reached}); continue with --resume --total-timesteps N")

    paths, windows = {}, {}
    for quality, first in (("medium-replay", mr_start), ("medium", medium_start)):
        paths[quality] = os.path.join(args.out_dir, f"walker_{args.task}_{quality}.npz")
        save_dataset(paths[quality], buffer.episodes(first, size, args.task))
        windows[quality] = {"first_episode": first, "last_episode": first + size - 1,
                            "env_steps": [first * EPISODE_LEN + 1, (first + size) * EPISODE_LEN],
                            "mean_return": math.fsum(returns[first:first + size]) / size}
    checkpoint_now(finished=True)
    total_seconds = elapsed + time.time() - start
    provenance = {
        "command": "python data/collect_td3.py " + " ".join(sys.argv[1:]),
        "args": asdict(args),
        "rule": (f"medium-replay: the first {size} consecutive training episodes whose mean return reaches "
                 f"{args.medium_replay_target}; medium: the first {size} consecutive episodes after those whose mean "
                 f"return reaches {args.medium_target}"),
        "precision": precision,
        "env_steps": buffer.size,
        "episodes": len(log),
        "windows": windows,
        "wall_seconds": total_seconds,
        "sittings": sittings,
        "versions": package_versions(),
        "files": paths,
    }
    atomic_write_bytes(os.path.join(args.out_dir, f"walker_{args.task}_collection.json"),
                       (json.dumps(provenance, indent=2) + "\n").encode())
    print(f"wrote {paths['medium-replay']} (episodes {mr_start}-{mr_start + size - 1}, mean return "
          f"{windows['medium-replay']['mean_return']:.1f}) and {paths['medium']} (episodes {medium_start}-"
          f"{medium_start + size - 1}, mean return {windows['medium']['mean_return']:.1f}) after {buffer.size} env "
          f"steps, {total_seconds / 3600:.2f} h", flush=True)


# ======================================================================================================
# Machinery: precision, checkpoints and the buffer's replay, progress, bookkeeping.
# ======================================================================================================
class _no_autocast:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def resolve_precision(asked: str) -> str:
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if asked == "auto":
        return "bf16" if native else "fp32"
    if asked == "bf16" and not native:
        print("warning: this CPU has no native bf16 (no AVX-512 BF16 or AMX): bf16 is emulated, ~16x slower than "
              "fp32; --precision fp32 (or auto) is the fast choice here", flush=True)
    return asked


def rng_states(env: WalkerEnv) -> dict:
    """Every random stream of the run, as plain lists and tensors (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    task_state = env.task_random.get_state()
    return {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state(), "task": [task_state[0], task_state[1].tolist(), *task_state[2:]],
            "action_space": env.action_space.np_random.bit_generator.state}


def set_rng_states(env: WalkerEnv, states: dict) -> None:
    random.setstate((states["python"][0], tuple(states["python"][1]), states["python"][2]))
    np_state = states["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], np.uint32), *np_state[2:]))
    torch.set_rng_state(states["torch"])
    task_state = states["task"]
    env.task_random.set_state((task_state[0], np.array(task_state[1], np.uint32), *task_state[2:]))
    env.action_space.np_random.bit_generator.state = states["action_space"]


def save_checkpoint(args, precision, nets, optimizers, buffer, reset_states, log, env, elapsed, sittings,
                    finished) -> None:
    state = {
        "format": "collect_td3/1", "args": asdict(args), "precision": precision, "finished": finished,
        "nets": {name: net.state_dict() for name, net in nets.items()},
        "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "actions": torch.from_numpy(buffer.actions[:buffer.size].copy()),
        "reset_states": torch.from_numpy(np.array(reset_states, np.float64).reshape(len(reset_states), -1)),
        "log": log, "rng": rng_states(env), "elapsed": elapsed, "sittings": sittings,
    }
    data = io.BytesIO()
    torch.save(state, data)
    atomic_write_bytes(args.checkpoint, data.getvalue())


def load_checkpoint(args: Args) -> dict:
    path = args.checkpoint
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no checkpoint to resume from")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != "collect_td3/1":
        raise UsageError(f"{path}: not a collect_td3 checkpoint")
    saved = checkpoint["args"]
    changed = sorted(k for k, v in asdict(args).items() if k not in RESUMABLE_CHANGES and v != saved.get(k))
    if changed:
        details = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(args, k)}" for k in changed)
        raise UsageError(f"{path} was made with other arguments ({details}); refusing to mix them")
    return checkpoint


def replay_buffer(args: Args, buffer: Buffer, actions: np.ndarray, reset_states: list, log: list[dict]) -> None:
    """Rebuild the buffer from its actions: MuJoCo is deterministic, so replaying each episode's actions from its
    initial physics state gives back its observations and rewards. Every replayed return must equal the logged
    one exactly, else the machine does not reproduce the physics and the run cannot continue faithfully."""
    env = WalkerEnv(args.task, seed=0)
    for episode, (state, row) in enumerate(zip(reset_states, log)):
        if episode and episode % 100 == 0:
            print(f"replayed {episode}/{len(log)} episodes", flush=True)
        env.reset()  # the step counter and the episode's bookkeeping; the state is set next
        with env.physics.reset_context():
            env.physics.set_state(state)
        obs = env.observation()
        episode_return = 0.0
        for action in actions[episode * EPISODE_LEN:(episode + 1) * EPISODE_LEN]:
            next_obs, _, _, _, info = env.step(action)
            buffer.add(obs, action, next_obs, info)
            episode_return += info[f"rewards_{args.task}"]
            obs = next_obs
        if episode_return != row["return"]:
            raise UsageError(f"{args.checkpoint}: replaying episode {episode} gives return {episode_return!r}, the log "
                             f"says {row['return']!r}: this machine's physics differs from the one that collected it")


class Progress:
    """From the first step: a tqdm bar on a terminal, else a plain line a minute (log files stay readable);
    every 10 episodes a line with the latest return and the trailing window's mean."""

    def __init__(self, total: int, done: int):
        self.total, self.done_at_start = total, done
        self.start = self.last_line = time.time()
        self.bar = tqdm(total=total, initial=done, unit="step", file=sys.stdout, disable=not sys.stdout.isatty())

    def step(self, done: int) -> None:
        self.bar.update()
        if self.bar.disable and time.time() - self.last_line >= 60:
            rate = (done - self.done_at_start) / (time.time() - self.start)
            eta = (self.total - done) / rate if rate > 0 else math.inf
            print(f"env step {done}/{self.total} | {rate:.0f} steps/s | budget ETA {format_duration(eta)}", flush=True)
            self.last_line = time.time()

    def episode(self, episode: int, done: int, episode_return: float, window: list[float], found: str) -> None:
        if episode % 10 and not found:
            return
        self.bar.write(f"episode {episode} (env step {done}): return {episode_return:.1f}, last {len(window)} "
                       f"mean {math.fsum(window) / len(window):.1f}{found}", file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()


def write_training_returns(path: str, log: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["episode", "env_step", "return", *(f"return_{t}" for t in TASKS)],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()} for row in log)
    atomic_write_bytes(path, text.getvalue().encode())


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except UsageError as exc:
        sys.exit(f"error: {exc}")
