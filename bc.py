"""BC: behaviour cloning on one DeepMind Control walker task, the weak baseline of Table 1.

A deterministic tanh actor regresses the dataset's actions (mean squared error). One self-contained file in the style of CleanRL / CORL: arguments, environment, dataset, networks, update,
evaluation and training loop. Equation numbers refer to the report (shared/seed, "Multi-Task Offline
Reinforcement Learning with Heuristic Conservative Soft Actor-Critic").

    python bc.py --task walk --dataset medium --seed 0
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "disable")  # no display needed; silences dm_control's GLFW warning
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # lets cuBLAS run deterministically

import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from dm_control import suite
from torch.utils.tensorboard import SummaryWriter

TASKS = ("walk", "run")
OBS_DIM, ACT_DIM = 24, 6


@dataclass
class Args:
    exp_name: str = "bc"
    """the name of this experiment (prefix of the run folder)"""
    run_name: str | None = None
    """folder name under runs/ (default: {exp_name}__{task}__{dataset}__{seed}__{unix time})"""
    seed: int = 0
    torch_deterministic: bool = True
    """use deterministic algorithms where torch offers them"""
    cuda: bool = True
    """use CUDA when it is available"""
    bf16: bool = False
    """bfloat16 autocast for the forward passes (fp32 master weights)"""
    track: bool = False
    """log to Weights & Biases (imported only when asked)"""
    wandb_project_name: str = "hcsac"
    save_model: bool = False
    """write the final weights to runs/{run_name}/model.pt"""

    task: Literal["walk", "run"] = "walk"
    dataset: Literal["medium", "medium-replay"] = "medium"
    data_dir: str = "data"
    """folder holding walker_{task}_{dataset}.npz"""

    epochs: int = 1000
    """one epoch is one shuffled pass over the training data"""
    batch_size: int = 1024
    hidden_dim: int = 1024
    num_layers: int = 3
    learning_rate: float = 3e-4
    eval_every: int = 10
    """epochs between evaluations"""
    eval_episodes: int = 10
    """episodes per task and evaluation"""


class UsageError(Exception):
    """Bad input from the user (arguments or data files): reported in one line, without a traceback."""


def check_args(args: Args) -> None:
    for name in ("epochs", "batch_size", "hidden_dim", "num_layers", "eval_every", "eval_episodes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")


# ----------------------------------------------------------------------------------------------- environment
class WalkerEnv(gym.Env):
    """dm_control walker as a gymnasium Env, observation flattened in dm_control's order:
    orientations (14), height (1), velocity (9). 1000 steps; ends by time limit only."""

    def __init__(self, task: str, seed: int):
        self._env = suite.load("walker", task, task_kwargs={"random": seed})
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)

    @staticmethod
    def _flatten(observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._flatten(self._env.reset().observation), {}

    def step(self, action):
        time_step = self._env.step(action)
        return self._flatten(time_step.observation), float(time_step.reward), False, time_step.last(), {}


def make_env(task: str, seed: int) -> WalkerEnv:
    return WalkerEnv(task, seed)


# ----------------------------------------------------------------------------------------------- dataset
DATASET_KEYS = {"observations": (OBS_DIM,), "actions": (ACT_DIM,), "rewards": (), "next_observations": (OBS_DIM,)}


class DatasetError(UsageError):
    """A dataset file that cannot be used; the message names the file and the fault."""


def load_dataset(path: str) -> dict[str, np.ndarray]:
    """Read a D4RL-style .npz and check every key we use: present, right shape, finite."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such dataset file (see data/README.md to collect or convert one)")
    try:
        with np.load(path) as npz:
            files = set(npz.files)
            data = {key: np.asarray(npz[key], np.float32) for key in DATASET_KEYS if key in files}
    except Exception as exc:  # BadZipFile, truncated file, pickled objects...
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    missing = [key for key in DATASET_KEYS if key not in data]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}")
    n = len(data["observations"])
    for key, shape in DATASET_KEYS.items():
        if data[key].shape != (n, *shape):
            raise DatasetError(f"{path}: '{key}' has shape {data[key].shape}, expected {(n, *shape)}")
        if not np.isfinite(data[key]).all():
            raise DatasetError(f"{path}: '{key}' contains NaN or inf")
    return data


def load_training_data(args: Args, device: torch.device) -> dict[str, torch.Tensor]:
    """The task's dataset as device tensors; an epoch is then a randperm and slices."""
    data = load_dataset(os.path.join(args.data_dir, f"walker_{args.task}_{args.dataset}.npz"))
    if len(data["observations"]) < args.batch_size:
        raise DatasetError(f"{args.data_dir}: {len(data['observations'])} transitions, fewer than one batch")
    return {key: torch.as_tensor(value, device=device) for key, value in data.items()}


# ----------------------------------------------------------------------------------------------- networks
def mlp(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int) -> nn.Sequential:
    layers, dim = [], in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU()]
        dim = hidden_dim
    return nn.Sequential(*layers, nn.Linear(dim, out_dim))


class Actor(nn.Module):
    """Deterministic policy a = tanh(f(s)), in [-1, 1] like the walker's actions."""

    def __init__(self, hidden_dim: int, num_layers: int):
        super().__init__()
        self.net = mlp(OBS_DIM, ACT_DIM, hidden_dim, num_layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs)


# ----------------------------------------------------------------------------------------------- update
class Learner:
    """The actor, its optimiser and one gradient step of behaviour cloning."""

    def __init__(self, args: Args, device: torch.device):
        self.args, self.device = args, device
        self.actor = Actor(args.hidden_dim, args.num_layers).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=args.learning_rate)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.bf16)

    def update(self, obs, actions, rewards, next_obs) -> dict[str, torch.Tensor]:
        """One step on a batch (rewards and next states are unused by BC)."""
        with self.autocast():
            actor_loss = F.mse_loss(self.actor(obs).float(), actions)
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        return {"actor_loss": actor_loss.detach()}


# ----------------------------------------------------------------------------------------------- evaluation
def eval_seed(seed: int, episode: int) -> int:
    """Evaluation environments are seeded apart from training and fresh at every evaluation."""
    return 1_000_000 + 1000 * seed + episode


@torch.no_grad()
def evaluate(actor: Actor, task: str, num_episodes: int, seed: int, device: torch.device) -> list[float]:
    """All episodes step together: one policy forward per step for the whole batch of environments."""
    envs = [make_env(task, eval_seed(seed, episode)) for episode in range(num_episodes)]
    obs = np.stack([env.reset()[0] for env in envs])
    returns, done = np.zeros(num_episodes), False
    while not done:
        actions = actor.act(torch.as_tensor(obs, device=device)).float().cpu().numpy()
        steps = [env.step(action) for env, action in zip(envs, actions)]
        obs = np.stack([step[0] for step in steps])
        returns += [step[1] for step in steps]
        done = steps[0][3]  # every episode lasts exactly 1000 steps
    return returns.tolist()


# ----------------------------------------------------------------------------------------------- training
def package_versions() -> dict[str, str]:
    return {"python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "numpy", "mujoco", "dm_control", "gymnasium")}}


def train(args: Args) -> dict:
    check_args(args)
    tasks = [args.task]
    run_name = args.run_name or f"{args.exp_name}__{args.task}__{args.dataset}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join("runs", run_name)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    data = load_training_data(args, device)
    steps_per_epoch = len(data["observations"]) // args.batch_size
    print(f"{run_name}: {len(data['observations'])} transitions, {steps_per_epoch} gradient steps per epoch, "
          f"{args.epochs * steps_per_epoch} in total, on {device}", flush=True)

    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, sync_tensorboard=True, config=vars(args), name=run_name)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    learner = Learner(args, device)

    history = {task: [] for task in tasks}  # (epoch, returns) of every evaluation
    start, train_seconds, global_step = time.time(), 0.0, 0
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.time()
        num_transitions = len(data["observations"])
        permutation = torch.randperm(num_transitions, device=device)
        for begin in range(0, num_transitions - args.batch_size + 1, args.batch_size):  # drop the last partial batch
            idx = permutation[begin:begin + args.batch_size]
            metrics = learner.update(data["observations"][idx], data["actions"][idx], data["rewards"][idx],
                                     data["next_observations"][idx])
            global_step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()  # so that the epoch's time includes its queued kernels
        train_seconds += time.time() - epoch_start
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            sps = global_step / train_seconds
            for name, value in metrics.items():
                writer.add_scalar(f"charts/{name}" if name == "alpha" else f"losses/{name}", value.item(), global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            line = f"epoch {epoch}/{args.epochs} step {global_step}"
            for task in tasks:
                returns = evaluate(learner.actor, task, args.eval_episodes, args.seed, device)
                history[task].append((epoch, returns))
                writer.add_scalar(f"eval/{task}_return", np.mean(returns), global_step)
                line += f" {task} {np.mean(returns):.1f}"
            eta = (args.epochs - epoch) * (time.time() - start) / epoch
            print(f"{line} | SPS {sps:.1f} | ETA {eta / 60:.1f} min", flush=True)

    results = {"algorithm": args.exp_name, "args": asdict(args), "run_name": run_name,
               "gradient_steps": global_step, "wall_time_s": time.time() - start, "device": str(device),
               "versions": package_versions(), "tasks": {}}
    for task in tasks:
        if not history[task]:
            continue
        final_epoch, final = history[task][-1]
        best_epoch, best = max(history[task], key=lambda item: np.mean(item[1]))
        # The final evaluation is the honest number; the best is reported, never selected.
        results["tasks"][task] = {"final": {"epoch": final_epoch, "mean": float(np.mean(final)), "std": float(np.std(final)),
                                            "returns": final},
                                  "best": {"epoch": best_epoch, "mean": float(np.mean(best))}}
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    if args.save_model:
        torch.save({"actor": learner.actor.state_dict(), "args": asdict(args)}, os.path.join(run_dir, "model.pt"))
    writer.close()
    return results


def main() -> None:
    args = tyro.cli(Args)
    try:
        train(args)
    except UsageError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
