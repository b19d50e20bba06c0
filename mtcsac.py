"""MTCSAC: multi-task conservative soft actor-critic on the union of the walker walk and run datasets.

CSAC (CQL(H) on top of SAC) with a learned task embedding added to the state before the actor and the
critics (Sec. 2.4), so that one agent learns both tasks.

One self-contained file in the style of CleanRL / CORL: arguments, environment, dataset, networks, update,
evaluation and training loop. Equation numbers refer to the report "Multi-Task Offline Reinforcement
Learning with Heuristic Conservative Soft Actor-Critic".

    python mtcsac.py --dataset medium --seed 0
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "disable")  # no display needed; silences dm_control's GLFW warning
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # lets cuBLAS run deterministically
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # MKL's matmuls: the same bits for any thread count

import copy
import ctypes
import fcntl
import hashlib
import io
import json
import math
import multiprocessing
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Literal, get_type_hints

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

ALGORITHM = "mtcsac"
TASKS = ("walk", "run")
DATASETS = ("medium", "medium-replay")
INITS = ("authors", "torch", "corl")
OBS_DIM, ACT_DIM = 24, 6
SCALES = ("paper", "cpu")
# --scale cpu, chosen by the calibration in results/cpu/calibration/: the paper's method hyperparameters on a
# 2x256 network with batch 256 for a budget of gradient steps (--max-steps; epochs from the data size), an
# evaluation every tenth of it, and bf16 where the CPU computes it natively (emulated, it is ~16x slower).
CPU_SCALE = {"hidden_dim": 256, "num_layers": 2, "batch_size": 256}
CPU_SCALE_STEPS, CPU_SCALE_EVALUATIONS = 40_000, 10


@dataclass(frozen=True)
class Range:
    """The meaningful values of a numeric flag in interval notation, e.g. "(0, 1]"; checked before any work."""
    interval: str

    def __contains__(self, value: float) -> bool:
        low, high = (float(bound) for bound in self.interval[1:-1].split(","))
        above = value >= low if self.interval[0] == "[" else value > low
        below = value <= high if self.interval[-1] == "]" else value < high
        return above and below  # False for NaN


@dataclass
class Args:
    exp_name: str = "mtcsac"
    """the name of this experiment (prefix of the run folder)"""
    run_name: str | None = None
    """folder name under runs/ (default: {exp_name}__{dataset}__{seed}__{unix time})"""
    seed: Annotated[int, Range("[0, 4294967295]")] = 0
    """seeds python, numpy and torch, in [0, 4294967295]"""
    torch_deterministic: bool = True
    """use deterministic algorithms where torch offers them"""
    cuda: bool = True
    """use CUDA when it is available"""
    scale: str = "paper"
    """paper (the report's settings: the defaults below) or cpu (a CPU-sized run, CPU_SCALE); flags typed on the
    command line win over the scale's"""
    bf16: bool = False
    """bfloat16 autocast for the forward passes (fp32 master weights); untyped, it is on where CUDA computes it
    natively (compute capability 8.0+) and off on a CPU (--scale cpu: on where the CPU computes it natively)"""
    compile: bool = False
    """torch.compile the update (on CUDA in mode reduce-overhead, i.e. with CUDA graphs)"""
    cuda_graph: bool = False
    """on CUDA, record the whole update once as one CUDA graph and replay it at every step (CUDAGraphUpdate); opt-in
    until a GPU has measured it; on a CPU the update runs eagerly (a line says so)"""
    track: bool = False
    """log to Weights & Biases (imported only when asked)"""
    wandb_project_name: str = "hcsac"
    save_model: bool = False
    """write the final weights to runs/{run_name}/model.pt"""
    resume: str | None = None
    """continue the run in this folder (runs/{run_name}) from its checkpoint.pt"""
    eval_only: bool = False
    """only evaluate the weights of --checkpoint, writing eval.json beside it"""
    checkpoint: str | None = None
    """a checkpoint.pt or model.pt, for --eval-only"""
    capture_video: bool = False
    """with --eval-only, save an mp4 of one episode per task (needs MUJOCO_GL=egl or osmesa)"""

    dataset: str = "medium"
    """medium or medium-replay"""
    data_dir: str = "data"
    """folder holding walker_{task}_{dataset}.npz for every task"""
    task_embedding: Literal["add", "concat"] = "add"
    """add the embedding to the state (the report) or concatenate it (the authors' code)"""

    epochs: Annotated[int, Range("[1, inf)")] = 1000
    """one epoch is one shuffled pass over the training data, in [1, inf)"""
    max_steps: Annotated[int | None, Range("[1, inf)")] = None
    """stop after this many gradient steps, mid-epoch if need be, in [1, inf); default: train all --epochs (the
    paper's budget is epochs; --scale cpu's is CPU_SCALE_STEPS gradient steps)"""
    batch_size: Annotated[int, Range("[1, inf)")] = 1024
    """transitions per gradient step, in [1, inf)"""
    hidden_dim: Annotated[int, Range("[1, inf)")] = 1024
    """units per hidden layer, in [1, inf)"""
    num_layers: Annotated[int, Range("[1, inf)")] = 3
    """hidden layers of every network, in [1, inf)"""
    critic_lr: Annotated[float, Range("(0, inf)")] = 3e-4
    """Adam's learning rate of the critics, in (0, inf)"""
    actor_lr: Annotated[float, Range("(0, inf)")] = 1e-4
    """Adam's learning rate of the actor, and also of the entropy temperature alpha, in (0, inf)"""
    tau: Annotated[float, Range("(0, 1]")] = 0.01
    """target networks move this fraction towards the critics per step, in (0, 1]"""
    gamma: Annotated[float, Range("[0, 1)")] = 0.99
    """discount, in [0, 1) (at 1 the Bellman target has no fixed point)"""
    cql_weight: Annotated[float, Range("[0, inf)")] = 10.0
    """weight of the conservative penalty (Eq. 8), in [0, inf); 0 is plain SAC"""
    num_sampled_actions: Annotated[int, Range("[1, inf)")] = 10
    """actions per state drawn from each of: uniform, policy at s, policy at s' (Eq. 9), in [1, inf)"""
    init: str = "authors"
    """details the paper leaves open: authors (log-std = s * out + b with learnable s = 1, b = -1, as in the
    authors' code; learned faster per step in results/cpu/calibration), torch (log-std from the network,
    PyTorch's default init), corl (authors plus, as CORL's cql.py code does: orthogonal critics with output gain
    1e-2, and an actor with only its last layer xavier-initialised at gain 1e-2, since CORL's actor ignores its
    orthogonal_init flag)"""
    eval_every: Annotated[int, Range("[1, inf)")] = 10
    """epochs between evaluations, in [1, inf)"""
    eval_every_steps: Annotated[int | None, Range("[1, inf)")] = None
    """gradient steps between evaluations, in [1, inf), instead of --eval-every epochs (--scale cpu: a tenth of
    CPU_SCALE_STEPS, so that every algorithm and budget is evaluated at the same steps)"""
    eval_episodes: Annotated[int, Range("[1, inf)")] = 10
    """episodes per task and evaluation, in [1, inf)"""
    eval_workers: Annotated[int | None, Range("[0, inf)")] = None
    """processes that step the evaluation's environments, in [0, inf); 0: this process; default: on CUDA one per
    episode up to the cores but one, on CPU 0 (the same returns either way)"""
    log_every: Annotated[int, Range("[1, inf)")] = 100
    """gradient steps between loss logs, in [1, inf); each logged value is the mean over the steps since the
    previous log"""


class UsageError(Exception):
    """Bad input from the user (arguments or data files): reported in one line, without a traceback."""


def check_args(args: Args) -> None:
    if args.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}; expected one of {', '.join(DATASETS)}")
    if args.scale not in SCALES:
        raise UsageError(f"unknown --scale {args.scale!r}; expected one of {', '.join(SCALES)}")
    if args.init not in INITS:
        raise UsageError(f"unknown --init {args.init!r}; expected one of {', '.join(INITS)}")
    for name, hint in get_type_hints(Args, include_extras=True).items():
        for allowed in getattr(hint, "__metadata__", ()):
            value = getattr(args, name)
            if isinstance(allowed, Range) and value is not None and value not in allowed:  # None: not set
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} {value} is outside its range {allowed.interval}")


# ----------------------------------------------------------------------------------------------- environment
class WalkerEnv(gym.Env):
    """dm_control walker as a gymnasium Env, observation flattened in dm_control's order:
    orientations (14), height (1), velocity (9). 1000 steps; ends by time limit only."""

    def __init__(self, task: str, seed: int):
        from dm_control import suite  # imported here: training needs no simulator (benchmarks/gpu_check.py)

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

    def render(self, height: int = 240, width: int = 320) -> np.ndarray:
        return self._env.physics.render(height, width, camera_id=0)

    def close(self):
        self._env.close()  # frees the renderer; without it osmesa prints tracebacks at exit


def make_env(task: str, seed: int) -> WalkerEnv:
    return WalkerEnv(task, seed)


# ----------------------------------------------------------------------------------------------- dataset
DATASET_KEYS = {"observations": (OBS_DIM,), "actions": (ACT_DIM,), "rewards": (), "next_observations": (OBS_DIM,)}


# The values the method can use: actions in the tanh policy's range, where the CQL penalty also samples;
# rewards in dm_control's [0, 1]. A little slack for float noise.
VALUE_RANGES = {"actions": (-1.0, 1.0), "rewards": (0.0, 1.0), "rewards_walk": (0.0, 1.0), "rewards_run": (0.0, 1.0)}
EPISODE_LENGTH = 1000  # walker episodes end by this time limit only


class DatasetError(UsageError):
    """A dataset file that cannot be used; the message names the file and the fault."""


def load_dataset(path: str) -> dict[str, np.ndarray]:
    """Read a D4RL-style .npz and check every key we use: present, right shape, finite, in range."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such dataset file (see data/README.md to collect or convert one)")
    try:
        with np.load(path) as npz:
            stored = {key: npz[key] for key in {*DATASET_KEYS, *VALUE_RANGES, "terminals", "timeouts"} & set(npz.files)}
    except Exception as exc:  # BadZipFile, truncated file, pickled objects...
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    missing = [key for key in DATASET_KEYS if key not in stored]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}")
    for key, values in stored.items():
        if values.dtype.kind not in "biuf":  # strings, objects, complex numbers
            raise DatasetError(f"{path}: '{key}' has dtype {values.dtype}, expected numbers")
    data = {key: stored[key].astype(np.float32) for key in DATASET_KEYS}
    n = len(data["observations"])
    for key, shape in DATASET_KEYS.items():
        if data[key].shape != (n, *shape):
            raise DatasetError(f"{path}: '{key}' has shape {data[key].shape}, expected {(n, *shape)}")
        if not np.isfinite(data[key]).all():
            raise DatasetError(f"{path}: '{key}' contains NaN or inf")
    check_values(path, stored)
    return data


def check_values(path: str, stored: dict[str, np.ndarray]) -> None:
    """Actions and rewards floating point and in range; terminals and timeouts boolean, a timeout exactly at the
    last step of every 1000-step episode. Each fault names the key and one offending row."""
    for key, (low, high) in VALUE_RANGES.items():
        if key in stored:
            values = stored[key]
            if values.dtype.kind != "f":
                raise DatasetError(f"{path}: '{key}' has dtype {values.dtype}, expected floating point")
            outside = ((values < low - 1e-6) | (values > high + 1e-6)).reshape(len(values), -1).any(1)
            if outside.any():
                row = int(outside.argmax())
                raise DatasetError(f"{path}: '{key}' outside [{low:g}, {high:g}] at row {row}: {values[row]}")
    for key in ("terminals", "timeouts"):
        if key in stored and stored[key].dtype != np.bool_:
            raise DatasetError(f"{path}: '{key}' has dtype {stored[key].dtype}, expected bool")
    if "timeouts" in stored:
        rows = len(stored["timeouts"])
        wrong = stored["timeouts"] != ((np.arange(rows) + 1) % EPISODE_LENGTH == 0)
        if wrong.any() or rows % EPISODE_LENGTH:
            row = int(wrong.argmax()) if wrong.any() else rows - 1
            raise DatasetError(f"{path}: 'timeouts' must mark the last step of each {EPISODE_LENGTH}-step episode "
                               f"and nothing else; row {row} is {bool(stored['timeouts'][row])}")


def dataset_files(args: Args) -> list[str]:
    return [os.path.join(args.data_dir, f"walker_{task}_{args.dataset}.npz") for task in TASKS]


def load_training_data(args: Args, device: torch.device) -> dict[str, torch.Tensor]:
    """The union of every task's dataset as device tensors, each transition with its task id and own reward."""
    per_task = [load_dataset(path) for path in dataset_files(args)]
    data = {key: np.concatenate([d[key] for d in per_task]) for key in DATASET_KEYS}
    data["task_ids"] = np.concatenate([np.full(len(d["observations"]), i) for i, d in enumerate(per_task)])
    if len(data["observations"]) < args.batch_size:
        raise DatasetError(f"{args.data_dir}: {len(data['observations'])} transitions, fewer than one batch")
    return {key: torch.as_tensor(value, device=device) for key, value in data.items()}


# ----------------------------------------------------------------------------------------------- networks
def mlp(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int) -> nn.Sequential:
    layers, dim = [], in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True)]  # in place: one activation buffer less
        dim = hidden_dim
    return nn.Sequential(*layers, nn.Linear(dim, out_dim))


class TaskEmbedding(nn.Module):
    """Task-aware state z = s + e_k (Sec. 2.4), or [s, e_k] with mode "concat"."""

    def __init__(self, mode: str, num_tasks: int = len(TASKS)):
        super().__init__()
        self.mode = mode
        self.embedding = nn.Embedding(num_tasks, OBS_DIM)
        self.out_dim = OBS_DIM if mode == "add" else 2 * OBS_DIM

    def forward(self, obs: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        e = self.embedding(task_ids)
        return obs + e if self.mode == "add" else torch.cat([obs, e], -1)


class VectorizedLinear(nn.Module):
    """`ensemble_size` independent linear layers applied with one batched matmul (as in CORL's SAC-N/EDAC)."""

    def __init__(self, in_dim: int, out_dim: int, ensemble_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_dim))
        for member in range(ensemble_size):  # the same initialisation as nn.Linear, member by member
            nn.init.kaiming_uniform_(self.weight[member].T, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_dim)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [E, B, in] -> [E, B, out]
        return torch.baddbmm(self.bias, x, self.weight)


class Critic(nn.Module):
    """Both Q-networks as one ensemble of 2: Q(s, a) for every critic in one call."""

    def __init__(self, hidden_dim: int, num_layers: int, task_embedding: str, init: str = "authors", num_critics: int = 2):
        super().__init__()
        self.task_embedding = TaskEmbedding(task_embedding)
        layers, dim = [], self.task_embedding.out_dim + ACT_DIM
        for _ in range(num_layers):
            layers += [VectorizedLinear(dim, hidden_dim, num_critics), nn.ReLU(inplace=True)]
            dim = hidden_dim
        self.net = nn.Sequential(*layers, VectorizedLinear(dim, 1, num_critics))
        self.num_critics = num_critics
        if init == "corl":  # orthogonal, gain sqrt(2) for ReLU layers and 1e-2 for the output; zero biases
            linears = [m for m in self.net if isinstance(m, VectorizedLinear)]
            for layer in linears:
                gain = 1e-2 if layer is linears[-1] else math.sqrt(2)
                for member in range(num_critics):
                    nn.init.orthogonal_(layer.weight.data[member].T, gain=gain)
                nn.init.zeros_(layer.bias)

    def forward(self, obs: torch.Tensor, task_ids: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim], task_ids [B] and actions [..., B, act_dim] -> Q-values [num_critics, ..., B]."""
        z = self.task_embedding(obs, task_ids)
        z = z.expand(*actions.shape[:-1], z.shape[-1])
        x = torch.cat([z, actions], -1).reshape(-1, z.shape[-1] + ACT_DIM)
        return self.ensemble(x).reshape(self.num_critics, *actions.shape[:-1])

    def ensemble(self, x: torch.Tensor) -> torch.Tensor:
        """Every critic on the same inputs: [N, in] -> [num_critics, N, 1]."""
        return self.net(x.expand(self.num_critics, -1, -1))


class Actor(nn.Module):
    """Tanh-Gaussian policy: a = tanh(mu + sigma * eps), reparameterised."""

    def __init__(self, hidden_dim: int, num_layers: int, task_embedding: str, init: str = "authors"):
        super().__init__()
        self.task_embedding = TaskEmbedding(task_embedding)
        self.net = mlp(self.task_embedding.out_dim, 2 * ACT_DIM, hidden_dim, num_layers)
        self.learnable_log_std = init != "torch"
        if self.learnable_log_std:  # log_std = scale * out + offset, initial std ~ e^-1 (authors, CORL)
            self.log_std_scale = nn.Parameter(torch.tensor(1.0))
            self.log_std_offset = nn.Parameter(torch.tensor(-1.0))
        if init == "corl":  # near-zero initial mean and log-std output
            nn.init.xavier_uniform_(self.net[-1].weight, gain=1e-2)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, obs: torch.Tensor, task_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(self.task_embedding(obs, task_ids)).chunk(2, -1)
        if self.learnable_log_std:
            log_std = self.log_std_scale * log_std + self.log_std_offset
        # log-std bounds [-5, 2] as CleanRL's SAC (the authors' code and CORL clamp at -20; std e^-5 = 0.007 is
        # already near-deterministic for actions in [-1, 1])
        return mean, log_std.clamp(-5.0, 2.0)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The deterministic action used for evaluation: tanh of the mean."""
        return torch.tanh(self(obs, task_ids)[0])


def sample_tanh_gaussian(mean, log_std, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """num_samples reparameterised actions [num_samples, B, act_dim] and their log-densities [num_samples, B]."""
    std = log_std.exp()
    noise = torch.randn(num_samples, *mean.shape, device=mean.device, dtype=mean.dtype)
    pre_tanh = mean + std * noise
    gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log|d tanh(u)/du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
    log_det = (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
    return torch.tanh(pre_tanh), gaussian_log_prob - log_det


# ----------------------------------------------------------------------------------------------- update
def cql_logsumexp(q_uniform, q_policy, q_policy_next, log_prob, log_prob_next) -> torch.Tensor:
    """Eq. 9: log-sum-exp over importance-weighted sampled actions, the soft maximum of Q off the data.

    Q-values are [num_critics, num_samples, B]; the uniform density over [-1, 1]^6 is 0.5^6. Returns
    [num_critics, B]. Every sampled action is evaluated at s, including those drawn from pi(.|s'), as in
    the CQL reference code.
    """
    uniform_log_density = ACT_DIM * math.log(0.5)
    importance_weighted = torch.cat(
        [q_uniform - uniform_log_density, q_policy - log_prob, q_policy_next - log_prob_next], dim=1)
    return torch.logsumexp(importance_weighted, dim=1)


class Learner:
    """Networks, optimisers and one gradient step of CSAC."""

    def __init__(self, args: Args, device: torch.device):
        self.args, self.device = args, device
        self.actor = Actor(args.hidden_dim, args.num_layers, args.task_embedding, args.init).to(device)
        # on CPU the critic takes the oneDNN speed path (the same Q-values, see CPUFusedCritic)
        critic_class = CPUFusedCritic if device.type == "cpu" else Critic
        self.critic = critic_class(args.hidden_dim, args.num_layers, args.task_embedding, args.init).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.target_entropy = -float(ACT_DIM)  # Eq. 5-6: minimum entropy -|A|
        # --cuda-graph: optimisers a CUDA graph can capture (fused Adam computes the same either way; on CPU eager)
        self.capturable = args.cuda_graph and device.type != "cpu"
        adam = {"fused": True, "capturable": self.capturable}
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=args.actor_lr, **adam)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=args.critic_lr, **adam)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=args.actor_lr, **adam)

    def autocast(self):
        # no cache of the bf16 weights where a CUDA graph captures the update (PyTorch's CUDA graph notes)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.bf16,
                              cache_enabled=not self.capturable)

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "alpha_optimizer": self.alpha_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        try:
            for name in ("actor", "critic", "critic_target", "actor_optimizer", "critic_optimizer", "alpha_optimizer"):
                getattr(self, name).load_state_dict(state[name])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UsageError(f"the checkpoint does not fit this network: {str(exc).splitlines()[0]}") from None
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for optimizer in (self.actor_optimizer, self.critic_optimizer, self.alpha_optimizer):
            for group in optimizer.param_groups:  # this run's --cuda-graph, not the checkpoint's
                group["capturable"] = self.capturable

    def update(self, obs, task_ids, actions, rewards, next_obs) -> dict[str, torch.Tensor]:
        """One step on a batch. Metrics stay on the device (no host sync) until they are logged."""
        args, n = self.args, self.args.num_sampled_actions
        batch_size = obs.shape[0]
        with self.autocast():
            # One actor forward for s and s'; sample 0 feeds the actor loss (at s) and the Bellman target
            # (at s'), samples 1..n the CQL log-sum-exp.
            mean, log_std = self.actor(torch.cat([obs, next_obs]), torch.cat([task_ids, task_ids]))
            sampled, log_prob = sample_tanh_gaussian(mean.float(), log_std.float(), 1 + n)  # [1 + n, 2B, ...]
            actions_s, actions_next = sampled.split(batch_size, dim=1)  # pi(.|s), pi(.|s')
            log_prob_s, log_prob_next = log_prob.split(batch_size, dim=1)
            new_actions, new_log_prob = actions_s[0], log_prob_s[0]
            next_actions = actions_next[0].detach()

            # Temperature (Eq. 6).
            alpha_loss = -(self.log_alpha * (new_log_prob.detach() + self.target_entropy)).mean()
            alpha = self.log_alpha.exp().detach()

            # Policy improvement (Eq. 4): minimise alpha log pi - min_k Q_k(s, a~pi).
            # The critic is held fixed here (its weights detached), so that one backward of the summed losses
            # gives every network exactly the gradient of its own loss.
            frozen_critic = {name: p.detach() for name, p in self.critic.named_parameters()}
            q_new = torch.func.functional_call(self.critic, frozen_critic, (obs, task_ids, new_actions)).min(0).values
            actor_loss = (alpha * new_log_prob - q_new.float()).mean()

            # Bellman target r + gamma min_k Q'_k(s', a'), a' ~ pi(s'). No entropy term (CORL's default) and
            # no terminal mask: walker episodes end by time limit only.
            with torch.no_grad():
                q_next = self.critic_target(next_obs, task_ids, next_actions).min(0).values.float()
                td_target = rewards + args.gamma * q_next

            # All of the critic loss's Q evaluations in one call: data actions, n uniform, n policy at s,
            # n policy at s' (evaluated at s).
            uniform = torch.rand(n, batch_size, ACT_DIM, device=obs.device) * 2 - 1
            all_actions = torch.cat([actions[None], uniform, actions_s[1:].detach(), actions_next[1:].detach()])
            q_all = self.critic(obs, task_ids, all_actions).float()  # [2, 1 + 3n, B]
            q_data, q_uniform, q_policy, q_policy_next = q_all.split([1, n, n, n], dim=1)
            q_data = q_data[:, 0]
            td_loss = (q_data - td_target).pow(2).mean(-1).sum()  # Eq. 8, squared Bellman error, summed over critics
            logsumexp = cql_logsumexp(q_uniform, q_policy, q_policy_next, log_prob_s[1:].detach(),
                                      log_prob_next[1:].detach())
            penalty = (logsumexp - q_data).mean(-1)  # Eq. 8-9 per critic: pushes Q down off the data, up on it
            critic_loss = td_loss + args.cql_weight * penalty.sum()

        for optimizer in (self.alpha_optimizer, self.actor_optimizer, self.critic_optimizer):
            optimizer.zero_grad()
        (alpha_loss + actor_loss + critic_loss).backward()  # the three losses share no parameters
        for optimizer in (self.alpha_optimizer, self.actor_optimizer, self.critic_optimizer):
            optimizer.step()
        soft_update(self.critic_target, self.critic, args.tau)
        return {"critic_loss": critic_loss.detach(), "td_loss": td_loss.detach(), "cql_penalty": penalty.mean().detach(),
                "actor_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach(), "alpha": alpha,
                "q_data": q_data.mean().detach(), "entropy": -new_log_prob.mean().detach(),
                # the conservative penalty's parts (CORL logs the same): Q on uniform, policy-at-s and
                # policy-at-s' actions, their log-sum-exp; cql_penalty is its gap to q_data
                "cql_q_uniform": q_uniform.mean().detach(), "cql_q_policy": q_policy.mean().detach(),
                "cql_q_policy_next": q_policy_next.mean().detach(), "cql_logsumexp": logsumexp.mean().detach()}


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


# ----------------------------------------------------------------------------------------------- evaluation
def eval_seed(seed: int, episode: int) -> int:
    """Evaluation environments are seeded apart from training and fresh at every evaluation."""
    return 1_000_000 + 1000 * seed + episode


@torch.no_grad()
def evaluate(actor: Actor, task: str, num_episodes: int, seed: int, device: torch.device,
             workers: EvaluationWorkers | None = None) -> list[float]:
    """All episodes step together: one policy forward per step for the whole batch of environments, stepped
    here or in `workers` (--eval-workers; the same actions, so the same returns)."""
    episodes = workers or Episodes()
    obs = episodes.reset(task, [eval_seed(seed, episode) for episode in range(num_episodes)])
    task_ids = torch.full((num_episodes,), TASKS.index(task), device=device)
    returns, done = np.zeros(num_episodes), False
    while not done:
        actions = actor.act(torch.as_tensor(obs, device=device), task_ids).float().cpu().numpy()
        obs, rewards, done = episodes.step(actions)
        returns += rewards
    return returns.tolist()


class Episodes:
    """Evaluation environments, fresh for every evaluation and stepped together in this process."""

    def reset(self, task: str, seeds: list[int]) -> np.ndarray:
        self.envs = [make_env(task, seed) for seed in seeds]
        return np.stack([env.reset()[0] for env in self.envs])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        steps = [env.step(action) for env, action in zip(self.envs, actions)]
        done = steps[0][3]  # every episode lasts exactly 1000 steps
        return np.stack([step[0] for step in steps]), np.array([step[1] for step in steps]), done


# ----------------------------------------------------------------------------------------------- training
def summarize(history: list[dict]) -> dict:
    final = history[-1]
    best = max(history, key=lambda evaluation: evaluation["mean"])
    # The final evaluation is the honest number; the best is reported, never selected.
    return {"final": {"epoch": final["epoch"], "step": final["step"], "mean": final["mean"],
                      "std": float(np.std(final["returns"])), "returns": final["returns"]},
            "best": {"epoch": best["epoch"], "step": best["step"], "mean": best["mean"]},
            "history": history}


def train(args: Args, checkpoint: dict | None = None, typed: set[str] | None = None) -> dict:
    check_args(args)
    tasks = list(TASKS)
    if args.resume is not None:
        run_dir = args.resume.rstrip("/")
        run_name = os.path.basename(run_dir)
    else:
        run_name = args.run_name or f"{args.exp_name}__{args.dataset}__{args.seed}__{int(time.time())}"
        run_dir = os.path.join("runs", run_name)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    use_deterministic_kernels(args.torch_deterministic)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    if device.type == "cpu":
        keep_freed_memory()

    data = load_training_data(args, device)
    data_digests = file_digests(dataset_files(args))  # recorded, so that no table mixes datasets
    if checkpoint is None and args.scale != "paper":  # a resumed run's arguments are already resolved
        print(apply_scale(args, len(data["observations"]), device, typed), flush=True)
    args.bf16, tf32, precision = resolve_precision(args, device, typed, resumed=checkpoint is not None)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32  # process-wide: every fp32 matmul of the run
    print(f"precision: {precision}", flush=True)
    steps_per_epoch = len(data["observations"]) // args.batch_size
    print(f"{run_name}: {len(data['observations'])} transitions, {steps_per_epoch} gradient steps per epoch, "
          f"{planned_steps(args, 0, 1, steps_per_epoch)} in total, on {device}", flush=True)
    learner = Learner(args, device)
    fp32_seconds = warn_if_bf16_is_emulated(args, device, tuple(data[key][:args.batch_size] for key in (
        "observations", "task_ids", "actions", "rewards", "next_observations")))
    update = learner.update
    if args.cuda_graph and args.compile:
        raise UsageError("--cuda-graph and --compile both record CUDA graphs of the update; choose one")
    if args.cuda_graph and device.type == "cuda":
        update = CUDAGraphUpdate(learner)  # recorded at the first step, after a resume has loaded its checkpoint
    elif args.cuda_graph:
        print("--cuda-graph applies only on CUDA: the update runs eagerly here", flush=True)
    if args.compile:
        update = torch.compile(update, mode="reduce-overhead" if device.type == "cuda" else None)

    history = {task: [] for task in tasks}  # every evaluation: epoch, step, training seconds, returns
    code = [code_version()]  # one entry per process that trained this run (a resumed run has several)
    cpus = [cpu_description()]  # the same, for the machine each process ran on
    gpus = [gpu_description(device)]  # and its GPU: None for a process on CPU
    first_epoch, global_step, train_seconds, elapsed_before, resume_at = 1, 0, 0.0, 0.0, None
    if checkpoint is not None:  # --resume: continue exactly where the checkpoint left off
        learner.load_state_dict(checkpoint["learner"])
        first_epoch, global_step = checkpoint["epoch"] + 1, checkpoint["global_step"]
        history, train_seconds, elapsed_before = checkpoint["history"], checkpoint["train_seconds"], checkpoint["elapsed"]
        code = checkpoint.get("code", []) + code
        cpus = checkpoint.get("cpus", [None] * (len(code) - 1)) + cpus  # None: a process that did not record it
        gpus = checkpoint.get("gpus", [None] * (len(code) - 1)) + gpus
        set_rng_states(checkpoint["rng"], device)
        resume_at = checkpoint.get("resume_at")  # where a signal stopped the run mid-epoch
        check_same_data(run_dir, checkpoint.get("data", data_digests), data_digests)
        print(f"resuming {run_dir} at {stop_point(global_step, checkpoint)}", flush=True)

    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, sync_tensorboard=True, config=vars(args), name=run_name)
    lock_run_folder(run_dir)
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")

    progress = Progress(planned_steps(args, global_step, first_epoch, steps_per_epoch), global_step, device,
                        suggest_cpu_scale(args), fp32_seconds, is_cpu_sized(args))
    step_metrics = StepMetrics(device)

    start = time.time() - elapsed_before  # wall time of this run, earlier processes included

    def snapshot(completed_epoch: int) -> dict:
        """Everything --resume needs to continue exactly."""
        return {"algorithm": ALGORITHM, "args": asdict(args), "learner": learner.state_dict(), "epoch": completed_epoch,
                "global_step": global_step, "history": history, "train_seconds": train_seconds,
                "elapsed": time.time() - start, "rng": rng_states(device), "code": code, "cpus": cpus, "gpus": gpus,
                "data": data_digests}

    def evaluate_and_checkpoint(epoch: int, position: dict | None = None) -> None:
        """Evaluate every task (history and logs), then checkpoint: after `epoch`, or within it at `position`
        (within_epoch: that epoch's batch order and next batch, as --resume needs it)."""
        sps = global_step / train_seconds
        writer.add_scalar("charts/SPS", sps, global_step)
        if step_metrics.count:
            log_metrics(writer, progress, step_metrics.pop_means(), global_step)
        rest_of_epoch = 0 if position is None else (len(position["permutation"]) - position["next_begin"]) // args.batch_size
        line = f"epoch {epoch}/{final_epoch(args, epoch, global_step, rest_of_epoch, len(data['observations']) // args.batch_size)} step {global_step}"
        for task in tasks:
            returns = evaluate(learner.actor, task, args.eval_episodes, args.seed, device, workers)
            history[task].append({"epoch": epoch, "step": global_step, "train_seconds": round(train_seconds, 1),
                                  "mean": float(np.mean(returns)), "returns": returns})
            writer.add_scalar(f"eval/{task}_return", np.mean(returns), global_step)
            line += f" {task} {np.mean(returns):.1f}"
            progress.show(**{task: float(np.mean(returns))})
        save_checkpoint(checkpoint_path, snapshot(epoch) if position is None
                        else {**snapshot(epoch - 1), "resume_at": position})
        progress.write(f"{line} | SPS {sps:.1f} | ETA {format_duration(progress.remaining_seconds(global_step))}")

    workers = evaluation_workers(args, device)
    preemption = Preemption()
    for epoch in range(first_epoch, args.epochs + 1):
        if global_step == args.max_steps:
            break  # resumed from the final checkpoint of a step budget: nothing left to train
        epoch_start = time.time()
        permutation, first_begin = epoch_batch_order(len(data["observations"]), device, resume_at)
        resume_at = None
        for begin in range(first_begin, len(permutation) - args.batch_size + 1, args.batch_size):  # drop the last partial batch
            idx = permutation[begin:begin + args.batch_size]
            metrics = update(data["observations"][idx], data["task_ids"][idx], data["actions"][idx],
                             data["rewards"][idx], data["next_observations"][idx])
            global_step += 1
            step_metrics.observe(metrics, global_step)
            if global_step % args.log_every == 0:
                log_metrics(writer, progress, step_metrics.pop_means(), global_step)
            progress.step(global_step)
            if global_step == args.max_steps:
                break  # the step budget is spent, maybe mid-epoch: the final evaluation follows
            if args.eval_every_steps and global_step % args.eval_every_steps == 0:
                step_metrics.check(epoch, checkpoint_path)
                train_seconds += synchronized_time(device) - epoch_start
                evaluate_and_checkpoint(epoch, within_epoch(permutation, begin + args.batch_size))
                epoch_start = time.time()
            if preemption.requested:  # SIGTERM or SIGINT: checkpoint after this step, then exit
                step_metrics.check(epoch, checkpoint_path)
                train_seconds += time.time() - epoch_start
                save_checkpoint(checkpoint_path, {**snapshot(epoch - 1),
                                                  "resume_at": within_epoch(permutation, begin + args.batch_size)})
                writer.close()
                progress.close()  # the stop line below starts on a line of its own
                raise Preempted(f"{preemption.requested} at {stop_point(global_step, {'epoch': epoch - 1, 'resume_at': 1})}; "
                                f"checkpoint written to {checkpoint_path}; continue with --resume {run_dir}")
        step_metrics.check(epoch, checkpoint_path)  # one host sync per epoch
        progress.end_of_epoch(global_step)
        train_seconds += synchronized_time(device) - epoch_start
        finished = epoch == args.epochs or global_step == args.max_steps
        if finished or (not args.eval_every_steps and epoch % args.eval_every == 0):
            evaluate_and_checkpoint(epoch)
        if finished:
            break

    progress.close()
    preemption.release()
    if workers:
        workers.close()
    results = {"algorithm": ALGORITHM, "args": asdict(args), "run_name": run_name,
               "gradient_steps": global_step, "wall_time_s": time.time() - start, "device": str(device),
               "precision": "bf16" if args.bf16 else "fp32", "tf32": tf32, "cpus": cpus, "gpus": gpus,
               "code": code, "versions": package_versions(), "data": data_digests,
               "tasks": {task: summarize(history[task]) for task in tasks}}
    write_json(os.path.join(run_dir, "results.json"), results)
    if args.save_model:
        save_checkpoint(os.path.join(run_dir, "model.pt"),
                        {"algorithm": ALGORITHM, "args": asdict(args), "learner": learner.state_dict()})
    writer.close()
    finals = ", ".join(f"{task} {results['tasks'][task]['final']['mean']:.1f}" for task in tasks)
    print(f"done: final return {finals} ({args.eval_episodes} episodes each) after {global_step} gradient steps; "
          f"results in {os.path.join(run_dir, 'results.json')}"
          + (f", model in {os.path.join(run_dir, 'model.pt')}" if args.save_model else ""), flush=True)
    return results


# ======================================================================================================
# Machinery, not the algorithm: checkpoints and resume, the run's bookkeeping, progress,
# per-step metrics (means, non-finite guard), CPU speed (memory, fused layers), one CUDA graph
# per update (GPU speed), video, evaluation only.
# ======================================================================================================
# may differ on --resume (data_dir too: a resume checks the data files themselves by their sha256)
RESUMABLE_CHANGES = {"epochs", "resume", "run_name", "track", "cuda", "save_model", "compile", "log_every",
                     "data_dir", "eval_workers", "cuda_graph"}
EVAL_ONLY_CHANGES = RESUMABLE_CHANGES | {"eval_only", "checkpoint", "eval_episodes", "seed", "capture_video",
                                         "eval_every", "bf16", "compile", "exp_name",
                                         "scale"}


def planned_steps(args: Args, done_steps: int, next_epoch: int, steps_per_epoch: int) -> int:
    """The gradient steps the run will have made at its end: the remaining epochs', capped by --max-steps."""
    steps = done_steps + (args.epochs - next_epoch + 1) * steps_per_epoch
    return steps if args.max_steps is None else min(steps, args.max_steps)


def final_epoch(args: Args, epoch: int, step: int, rest_of_epoch: int, steps_per_epoch: int) -> int:
    """The epoch the run ends in: --epochs, or under --max-steps the epoch its last step falls in (at this
    epoch's size), so that a progress line never counts epochs the budget does not hold."""
    if args.max_steps is None:
        return args.epochs
    later_steps = max(0, args.max_steps - step - rest_of_epoch)
    return min(args.epochs, epoch + math.ceil(later_steps / max(1, steps_per_epoch)))


def stop_point(step: int, checkpoint: dict) -> str:
    """Where a checkpoint stands, in the same words for the stop that wrote it and the resume that reads it."""
    if checkpoint.get("resume_at") is not None:
        return f"gradient step {step} (in epoch {checkpoint['epoch'] + 1})"
    return f"gradient step {step} (after epoch {checkpoint['epoch']})"


def synchronized_time(device: torch.device) -> float:
    """time.time() once the device's queued kernels are done, so that a timed stretch includes them."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.time()


def within_epoch(permutation: torch.Tensor, next_begin: int) -> dict:
    """Where --resume continues inside an epoch: the epoch's batch order and the offset of its next batch."""
    return {"permutation": permutation.cpu(), "next_begin": next_begin}


def epoch_batch_order(num_transitions: int, device: torch.device, resume_at: dict | None) -> tuple[torch.Tensor, int]:
    """The epoch's shuffled row order and the offset of its first batch: a fresh permutation, or, in the epoch a
    signal interrupted, that epoch's saved permutation from the batch after the last one trained."""
    if resume_at is not None:
        return resume_at["permutation"].to(device), resume_at["next_begin"]
    return torch.randperm(num_transitions, device=device), 0


def save_checkpoint(path: str, state: dict) -> None:
    content = io.BytesIO()
    torch.save(state, content)
    atomic_write(path, content.getvalue())


def write_json(path: str, value: dict) -> None:
    atomic_write(path, json.dumps(value, indent=2).encode())


def atomic_write(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, flushed and fsynced, then rename: a kill or a full disk
    mid-write leaves the previous file intact; a failed write stops the run with one line naming the file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise WriteFailed(f"{path}: cannot write it ({exc.strerror or exc}); the previous version is intact") from None


class WriteFailed(RuntimeError):
    """A file could not be written (a full disk, an I/O error)."""


RUN_LOCKS = []  # open lock files: held until the process ends, however it ends


def lock_run_folder(run_dir: str) -> None:
    """One process trains in a run folder: an flock on run_dir/.lock (released by the kernel when the process
    dies), so that a restarted grid never starts a second copy beside a run still alive. The grid takes the
    lock before it starts a run and hands it over as an open file (RUN_FOLDER_LOCK_FD): no moment unlocked."""
    os.makedirs(run_dir, exist_ok=True)
    handed_over = os.environ.pop("RUN_FOLDER_LOCK_FD", None)
    lock = os.fdopen(int(handed_over), "a+") if handed_over else open(os.path.join(run_dir, ".lock"), "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        raise UsageError(f"{run_dir}: another process is training in this folder ({lock.read().strip() or 'pid unknown'})")
    lock.truncate(0)
    lock.write(f"pid {os.getpid()} on {platform.node()}\n")
    lock.flush()
    RUN_LOCKS.append(lock)


def rng_states(device: torch.device) -> dict:
    """Every generator the run draws from; of CUDA's, only the run's own device's (None on CPU), so that a resume
    on a machine with another number of GPUs, or on CPU, can restore it."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_states(states: dict, device: torch.device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if isinstance(cuda, (list, tuple)):  # older checkpoints kept every GPU's state; the run used the first
        cuda = cuda[0] if cuda else None
    if cuda is not None and device.type == "cuda":  # on CPU the run draws from no CUDA generator
        torch.cuda.set_rng_state(cuda, device)


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("algorithm") != ALGORITHM:
        found = checkpoint.get("algorithm") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UsageError(f"{path}: a checkpoint of {found!r}, not of {ALGORITHM!r}")
    return checkpoint


def parse_args() -> tuple[Args, dict | None]:
    """Command-line arguments; with --resume or --eval-only, the saved run's arguments are the defaults and
    a flag that contradicts them (other than those allowed to change) is refused."""
    args = tyro.cli(Args)
    if args.resume is not None:
        path, allowed = os.path.join(args.resume, "checkpoint.pt"), RESUMABLE_CHANGES
        if not os.path.isfile(path):
            raise UsageError(f"{args.resume}: no checkpoint.pt to resume from")
    elif args.eval_only:
        if args.checkpoint is None:
            raise UsageError("--eval-only needs --checkpoint PATH (a checkpoint.pt or model.pt)")
        path, allowed = args.checkpoint, EVAL_ONLY_CHANGES
    else:
        return args, None
    checkpoint = load_checkpoint(path)
    saved = Args(**checkpoint["args"])
    args = tyro.cli(Args, default=saved)  # the flags given again override the saved values
    changed = sorted(k for k in asdict(saved) if getattr(saved, k) != getattr(args, k) and k not in allowed)
    if changed:
        details = ", ".join(f"--{k.replace('_', '-')} {getattr(saved, k)} -> {getattr(args, k)}" for k in changed)
        raise UsageError(f"{path} was made with other arguments ({details}); refusing to mix them")
    return args, checkpoint


def file_digests(paths: list[str]) -> dict[str, str]:
    """File name -> sha256 of its bytes."""
    digests = {}
    for path in paths:
        with open(path, "rb") as f:
            digests[os.path.basename(path)] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def check_same_data(run_dir: str, saved: dict[str, str], now: dict[str, str]) -> None:
    """A run resumes only on the data it started on."""
    changed = sorted(name for name in {*saved, *now} if saved.get(name) != now.get(name))
    if changed:
        raise UsageError(f"{run_dir}: {', '.join(changed)} changed since the run started (sha256 "
                         f"{saved.get(changed[0], 'none')[:12]} -> {now.get(changed[0], 'none')[:12]}); refusing to "
                         f"mix datasets in one run")


def package_versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **{pkg: installed_version(pkg) for pkg in (
        "torch", "numpy", "mujoco", "dm_control", "gymnasium")}}


def installed_version(package: str) -> str | None:
    """None where the package is missing (training runs without the simulator, benchmarks/gpu_check.py)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def code_version() -> dict:
    """The git commit of this file's repository and whether its tree had uncommitted changes."""
    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(["git", *cmd], cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True,
                                  text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None
    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


class Progress:
    """Where the run is, from its first step. On a terminal a tqdm bar over gradient steps (steps/s, ETA, latest
    losses and return); otherwise (CI, nohup, the grid's logs) a plain line at most once a minute, so that log
    files stay readable. After the first updates, one line with their measured cost and the projected duration,
    and where that is hours on a CPU, what to do instead."""

    PLAIN_LINE_SECONDS = 60
    WARMUP_UPDATES, TIMED_UPDATES = 2, 5  # the first updates allocate memory (and compile): not timed
    TIMED_SECONDS = 15  # or fewer timed updates where they are this slow
    SLOW_SECONDS = 3 * 3600

    def __init__(self, total_steps: int, done_steps: int, device: torch.device, suggest_scale: bool = False,
                 fp32_seconds: float | None = None, cpu_sized: bool = False):
        self.total_steps, self.first_step, self.device = total_steps, done_steps, device
        self.suggest_scale, self.fp32_seconds = suggest_scale, fp32_seconds  # fp32 timed: bf16 is emulated here
        self.cpu_sized = cpu_sized  # no larger than the cpu scale: slow means a busy or slow CPU, not a GPU job
        self.interactive = sys.stdout.isatty()
        columns, lines = shutil.get_terminal_size()  # 80 x 24 where a terminal does not say its size
        self.bar = tqdm(total=total_steps, initial=done_steps, unit="step", file=sys.stdout, ncols=columns, nrows=lines,
                        disable=not self.interactive)
        self.postfix: dict[str, str] = {}
        self.start = self.last_line = time.time()
        self.timer_start, self.cost_reported = None, False

    def step(self, step: int) -> None:
        self.bar.update()
        done = step - self.first_step
        if done == self.WARMUP_UPDATES:
            self.timer_start = synchronized_time(self.device)
        elif not self.cost_reported and done > self.WARMUP_UPDATES and (
                done == self.WARMUP_UPDATES + self.TIMED_UPDATES or time.time() - self.timer_start > self.TIMED_SECONDS):
            self.report_cost(step)
        if not self.interactive and time.time() - self.last_line >= self.PLAIN_LINE_SECONDS:
            self.plain_line(step)

    def end_of_epoch(self, step: int) -> None:
        if not self.cost_reported:  # a first epoch shorter than the timed updates: cost from what there was
            self.report_cost(step)

    def report_cost(self, step: int) -> None:
        now, done = synchronized_time(self.device), step - self.first_step
        if self.timer_start is not None and done > self.WARMUP_UPDATES:
            seconds = (now - self.timer_start) / (done - self.WARMUP_UPDATES)
        else:
            seconds = (now - self.start) / max(done, 1)
        remaining = (self.total_steps - step) * seconds
        line = (f"cost: {seconds * 1000:.1f} ms per update on {self.device.type}; the remaining {self.total_steps - step} "
                f"of {self.total_steps} updates take about {format_duration(remaining)}, evaluations not included")
        if self.device.type == "cpu" and remaining > self.SLOW_SECONDS:
            line += "\n" + self.slow_run_hint(self.total_steps - step)
        self.write(line)
        self.cost_reported = True

    def slow_run_hint(self, remaining_steps: int) -> str:
        """The cause of a slow CPU run and the flags that fit: a GPU only where even fp32 is hours here."""
        if self.fp32_seconds is not None:
            fp32_remaining = remaining_steps * self.fp32_seconds
            if fp32_remaining <= self.SLOW_SECONDS:
                return (f"hint: bf16 is emulated on this CPU; without --bf16 (fp32) the remaining updates take about "
                        f"{format_duration(fp32_remaining)}")
            hint = (f"hint: bf16 is emulated on this CPU, and in fp32 the remaining updates still take about "
                    f"{format_duration(fp32_remaining)}: a GPU-sized run here; use a GPU (bf16 by default there)")
        elif self.cpu_sized:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            return (f"hint: a CPU-sized run, slow here: other work may share this CPU (load average {load:.1f} on "
                    f"{os.cpu_count()} cores); on an idle CPU the cost line is the figure to trust")
        else:
            hint = "hint: a GPU-sized run for this CPU; use a GPU (bf16 by default there)"
        return hint + (", or --scale cpu (a CPU-sized run, results/cpu)" if self.suggest_scale else "")

    def rate(self, step: int) -> float:
        """Steps per second of this process: a resumed run's earlier parts may have had other cores or threads."""
        return (step - self.first_step) / max(time.time() - self.start, 1e-9)

    def remaining_seconds(self, step: int) -> float:
        rate = self.rate(step)
        return (self.total_steps - step) / rate if rate > 0 else math.inf

    def plain_line(self, step: int) -> None:
        line = (f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%) | "
                f"{self.rate(step):.1f} steps/s | ETA {format_duration(self.remaining_seconds(step))}")
        print(" | ".join([line, *(f"{k} {v}" for k, v in self.postfix.items())]), flush=True)
        self.last_line = time.time()

    def show(self, **values: float) -> None:
        self.postfix.update({name: f"{value:.4g}" for name, value in values.items()})
        if self.interactive:
            self.bar.set_postfix(self.postfix, refresh=False)

    def write(self, line: str) -> None:
        if self.interactive:
            self.bar.write(line, file=sys.stdout)  # above the bar, which stays at the bottom
        else:
            print(line, flush=True)

    def close(self) -> None:
        self.bar.close()


def apply_scale(args: Args, num_transitions: int, device: torch.device, typed: set[str] | None) -> str:
    """Resolve --scale cpu for this run: CPU_SCALE, a budget of CPU_SCALE_STEPS gradient steps (and the epochs
    of this data that hold it), an evaluation every CPU_SCALE_STEPS / CPU_SCALE_EVALUATIONS steps whatever the
    budget (so a longer run's evaluations include a shorter one's), and bf16 where the device computes it
    natively; the flags in `typed` keep their values. Returns the line that says so."""
    if typed is None:  # called from Python: the fields set away from their defaults count as typed
        typed = {name for name, value in asdict(Args()).items() if getattr(args, name) != value}
    for name, value in {**CPU_SCALE, "bf16": native_bf16(device)}.items():
        if name not in typed:
            setattr(args, name, value)
    if "max_steps" not in typed and "epochs" not in typed:  # --epochs typed alone: an epoch budget, as the paper's
        args.max_steps = CPU_SCALE_STEPS
    if "epochs" not in typed:
        args.epochs = math.ceil(args.max_steps / max(1, num_transitions // args.batch_size))
    if "eval_every_steps" not in typed and "eval_every" not in typed:
        args.eval_every_steps = CPU_SCALE_STEPS // CPU_SCALE_EVALUATIONS
    shown = [*CPU_SCALE, "max_steps", "epochs", "eval_every_steps" if args.eval_every_steps else "eval_every"]
    flags = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in shown if getattr(args, name) is not None]
    flags.append("--bf16" if args.bf16 else "--no-bf16")
    kept = sorted(f"--{name.replace('_', '-')}" for name in typed if name in [*shown, "eval_every", "eval_every_steps",
                                                                          "relabel_every", "bf16"])
    if args.bf16:
        precision = "bf16, native here" if native_bf16(device) else "bf16 as typed, emulated on this CPU"
    else:
        precision = "fp32, as typed" if "bf16" in typed else "fp32: no native bf16 here"
    return f"scale cpu: {' '.join(flags)} ({precision})" + (f"; typed, kept: {' '.join(kept)}" if kept else "")


def resolve_precision(args: Args, device: torch.device, typed: set[str] | None,
                      resumed: bool = False) -> tuple[bool, bool, str]:
    """The run's precision: (bf16 autocast, TF32 allowed in fp32 matmuls, the line that says which and why). A
    resumed run keeps the bf16 it started with, a typed --bf16/--no-bf16 wins, and otherwise CUDA takes bf16
    where it computes it natively (compute capability 8.0+) and a CPU keeps what the scale chose (paper: fp32;
    cpu: apply_scale's). TF32 is allowed on every CUDA run, and used where the GPU has it (8.0+)."""
    if typed is None:  # called from Python: the fields set away from their defaults count as typed
        typed = {name for name, value in asdict(Args()).items() if getattr(args, name) != value}
    bf16, tf32 = args.bf16, device.type == "cuda"
    if resumed:
        why = "as the run started; it may not change on resume"
    elif "bf16" in typed:
        why = f"{'--bf16' if bf16 else '--no-bf16'} typed"
    elif device.type == "cuda":
        bf16 = native_bf16(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        why = (f"default on CUDA with compute capability 8.0+, here {capability}; --no-bf16 for fp32" if bf16 else
               f"default on CUDA below compute capability 8.0, here {capability}: no native bf16")
    elif args.scale == "cpu":
        why = f"--scale cpu: {'native' if bf16 else 'no native'} bf16 on this CPU"
    else:
        why = "default on CPU; --bf16 for bf16 autocast"
    tf32_note = "; TF32 allowed in fp32 matmuls on CUDA" if tf32 else ""
    return bf16, tf32, f"{'bf16' if bf16 else 'fp32'} ({why}){tf32_note}"


def typed_flags(argv: list[str]) -> set[str]:
    """The Args fields named on the command line (--name value, --name=value, --no-name)."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            names.add(name[3:] if name.startswith("no_") and name[3:] in Args.__dataclass_fields__ else name)
    return names


def suggest_cpu_scale(args: Args) -> bool:
    """Whether the slow-run hint should name --scale cpu: a paper-scale run larger than the cpu scale."""
    return args.scale == "paper" and any(getattr(args, name) > value for name, value in CPU_SCALE.items())


def is_cpu_sized(args: Args) -> bool:
    """No larger than the cpu scale's network and batch."""
    return all(getattr(args, name) <= value for name, value in CPU_SCALE.items())


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware: AVX-512 BF16 or AMX on a CPU (elsewhere oneDNN emulates it, ~16x slower than fp32), compute
    capability 8.0+ on CUDA."""
    if device.type == "cuda":  # compute capability 8.0+ (by default is_bf16_supported also counts emulation)
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_description() -> dict:
    """What a results file needs to say about the CPU: its model, vector capability, native bf16, and the torch
    threads the process used (a bf16 run's sums depend on them). On Linux also its CPUID family/model (a cloud
    host's "AMD EPYC" may be a Zen 4 or a Zen 5, whose bf16 speeds differ) and whether it has AMX."""
    model, cpuinfo = platform.processor() or platform.machine(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                cpuinfo.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    description = {"model": cpuinfo.get("model name", model), "capability": torch.backends.cpu.get_cpu_capability(),
                   "native_bf16": native_bf16(torch.device("cpu")), "threads": torch.get_num_threads()}
    if "cpu family" in cpuinfo and "model" in cpuinfo:
        description["family_model"] = f"{cpuinfo['cpu family']}/{cpuinfo['model']}"
        description["amx"] = "amx_bf16" in cpuinfo.get("flags", "").split()
    return description


def gpu_description(device: torch.device) -> dict | None:
    """What a results file needs to say about the GPU a process ran on (None on CPU): its model, compute
    capability and memory, and the CUDA and driver versions."""
    if device.type != "cuda":
        return None
    properties = torch.cuda.get_device_properties(device)
    return {"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
            "memory_gib": round(properties.total_memory / 2**30, 1), "cuda": torch.version.cuda,
            "driver": nvidia_driver_version()}


def nvidia_driver_version() -> str | None:
    """The driver's version as nvidia-smi reports it; None where nvidia-smi is missing or fails (not a reason to
    stop a run)."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    versions = result.stdout.split()
    return versions[0] if result.returncode == 0 and versions else None


def warn_if_bf16_is_emulated(args: Args, device: torch.device, batch: tuple) -> float | None:
    """--bf16 on a CPU without native bf16: time a few updates of two throwaway learners, bf16 and fp32 (the RNG
    states are restored, so the run computes what it would have), and warn in one line. Returns the fp32
    seconds per update, for the slow-run hint; None where bf16 is native or not asked."""
    if device.type != "cpu" or not args.bf16 or native_bf16(device):
        return None
    states = rng_states(device)
    seconds = {bf16: time_updates(Learner(replace(args, bf16=bf16), device).update, batch) for bf16 in (True, False)}
    set_rng_states(states, device)
    print(f"warning: this CPU ({cpu_description()['capability']}) has no native bf16 (AVX-512 BF16 or AMX), so --bf16 "
          f"is emulated: {seconds[True] * 1000:.0f} ms per update against {seconds[False] * 1000:.0f} ms in fp32 "
          f"({seconds[True] / seconds[False]:.1f}x); without --bf16 this run is faster", flush=True)
    return seconds[False]


def time_updates(update, batch: tuple, warmup: int = 1, timed: int = 3, budget_seconds: float = 10.0) -> float:
    """Seconds per update after `warmup` untimed ones (the first allocates), at most about `budget_seconds`."""
    for _ in range(warmup):
        update(*batch)
    start, done = time.time(), 0
    while done < timed and (done == 0 or time.time() - start < budget_seconds):
        update(*batch)
        done += 1
    return (time.time() - start) / done


SHOWN_METRICS = ("critic_loss", "actor_loss", "loss", "alpha")  # beside the progress bar; tensorboard has all


def log_metrics(writer: SummaryWriter, progress: Progress, means: dict[str, float], step: int) -> None:
    for name, value in means.items():
        writer.add_scalar(f"charts/{name}" if name == "alpha" else f"losses/{name}", value, step)
    progress.show(**{name: value for name, value in means.items() if name in SHOWN_METRICS})


def use_deterministic_kernels(enabled: bool) -> None:
    """--torch-deterministic (CleanRL's flag): deterministic kernels where torch has them, a warning where not.
    cuBLAS is deterministic only with a fixed workspace, chosen before its first call (cuBLAS docs, "Results
    reproducibility"); without it every GEMM also builds a warning. A value the user set wins."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def keep_freed_memory() -> None:
    """Speed on CPU, same numbers: glibc gives every large tensor a fresh mmap by default, whose pages the kernel
    zeroes on first touch; keeping freed memory in the process made the CPU-sized update about 1.4x faster."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameter numbers (malloc.h)
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's largest allowed mmap threshold
    libc.mallopt(m_trim_threshold, 1 << 30)


class OneDNNLinearReLU(torch.autograd.Function):
    """relu(x @ weight.T + bias) with the ReLU inside oneDNN's matmul: one pass over the critics' largest
    activations instead of two (the CPU-sized update 1.06x faster idle; benchmarks/cpu_speed.md). Linear +
    ReLU's values up to float rounding; the backward is autograd's: ReLU's mask, then the two matmuls and the
    bias sum."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # x [N, in], weight [out, in], bias [out]
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [None], "")
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad_y, y, 0)  # zero where the ReLU was
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = (x.T @ grad).T if ctx.needs_input_grad[1] else None  # = grad.T @ x; the grid's runs used this form
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


class CPUFusedCritic(Critic):
    """Speed on CPU, the same Q-values: the Critic with each member's hidden layers run as oneDNN matmuls with
    the ReLU fused in (OneDNNLinearReLU), where that applies; elsewhere the plain ensemble."""

    def ensemble(self, x: torch.Tensor) -> torch.Tensor:
        if not onednn_fusion_applies(x):
            return super().ensemble(x)
        return torch.stack([onednn_member_forward(self.net, member, x) for member in range(self.num_critics)])


def onednn_fusion_applies(x: torch.Tensor) -> bool:
    """On CPU with oneDNN in fp32, or bf16 where the CPU has it; not under torch.compile, which fuses by itself."""
    if x.device.type != "cpu" or not torch.backends.mkldnn.is_available() or torch.compiler.is_compiling():
        return False
    dtype = compute_dtype(x)
    return dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def onednn_member_forward(net: nn.Sequential, member: int, x: torch.Tensor) -> torch.Tensor:
    """One member of the ensemble `net` (VectorizedLinear, ReLU, ..., VectorizedLinear) on x [N, in] -> [N, 1]."""
    dtype = compute_dtype(x)
    linears = [module for module in net if isinstance(module, VectorizedLinear)]
    with torch.autocast("cpu", enabled=False):  # casts as autocast does: compute in dtype, fp32 master weights
        x = x.to(dtype)
        for layer in linears[:-1]:
            x = OneDNNLinearReLU.apply(x, layer.weight[member].T.to(dtype), layer.bias[member, 0].to(dtype))
        return F.linear(x, linears[-1].weight[member].T.to(dtype), linears[-1].bias[member, 0].to(dtype))


class CUDAGraphUpdate:
    """--cuda-graph on CUDA: the whole Learner.update (forward, backward, the three optimiser steps, the target
    update) recorded once as one CUDA graph and replayed at every step. Why: eagerly an update is hundreds of
    kernel launches, each microseconds of Python and driver work; at the paper's size in bf16 the GPU runs the
    kernels faster than they are launched (launch-bound), and a replay is one launch. PyTorch's whole-network
    capture (torch.cuda.graph, "CUDA Graphs" in its CUDA semantics notes), recorded at the first step (after a
    resume has loaded its checkpoint) with capturable optimisers and no autocast weight cache (Learner). Each
    step copies its batch into the graph's static inputs, so that the graph reads no dataset tensor (hcsac
    rebuilds its dataset at each relabeling). The metrics returned are the graph's static outputs, overwritten by
    the next replay: the caller consumes them before (StepMetrics.observe stacks them into a tensor of its own,
    queued on this stream ahead of the next replay, so stream order has it read this step's values)."""

    WARMUP_UPDATES = 3  # the first creates the optimisers' state; autograd and cuBLAS settle their buffers

    def __init__(self, learner: Learner):
        if not learner.capturable:
            raise ValueError("CUDAGraphUpdate needs a Learner made with --cuda-graph on CUDA (capturable optimisers)")
        self.learner, self.graph, self.inputs, self.outputs = learner, None, [], {}

    def __call__(self, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.graph is None:
            self.record(batch)
        for static, value in zip(self.inputs, batch, strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.outputs

    def record(self, batch: tuple[torch.Tensor, ...]) -> None:
        """Warm-up updates on a side stream, then the capture; the warm-up's changes (weights, optimiser state,
        random generator) are undone in place, so the run computes what it would have without them."""
        learner, device = self.learner, self.learner.device
        self.inputs = [value.clone() for value in batch]
        saved = snapshot_learner(learner)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), warnings.catch_warnings():
            # capturable optimisers stepped outside a capture: on purpose here, no warning
            warnings.filterwarnings("ignore", "This instance was constructed with capturable=True")
            for _ in range(self.WARMUP_UPDATES):
                learner.update(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        for optimizer in optimizers(learner):
            optimizer.zero_grad(set_to_none=True)  # the gradients are then allocated in the graph's memory
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = learner.update(*self.inputs)
        restore_learner(learner, saved)


def optimizers(learner: Learner) -> list[torch.optim.Optimizer]:
    return [value for value in vars(learner).values() if isinstance(value, torch.optim.Optimizer)]


def snapshot_learner(learner: Learner) -> dict:
    """Copies of all that an update changes: every network's parameters and buffers, the learner's other tensors,
    the optimisers' state, and the random generator of the learner's device (what restore_learner puts back)."""
    saved = {"rng": device_rng_state(learner.device)}
    for name, value in vars(learner).items():
        if isinstance(value, nn.Module):
            saved[name] = {key: tensor.detach().clone() for key, tensor in value.state_dict(keep_vars=True).items()}
        elif isinstance(value, torch.Tensor):
            saved[name] = value.detach().clone()
        elif isinstance(value, torch.optim.Optimizer):
            saved[name] = {param: {key: tensor.clone() for key, tensor in state.items()}
                           for param, state in value.state.items()}
    return saved


@torch.no_grad()
def restore_learner(learner: Learner, saved: dict) -> None:
    """Back to snapshot_learner's `saved`, in place (copy_: a CUDA graph keeps the tensors' addresses); optimiser
    state made since (by a first update) is reset to what Adam starts from, zeros at step 0."""
    for name, value in vars(learner).items():
        if isinstance(value, nn.Module):
            for key, tensor in value.state_dict(keep_vars=True).items():
                tensor.copy_(saved[name][key])
        elif isinstance(value, torch.Tensor):
            value.copy_(saved[name])
        elif isinstance(value, torch.optim.Optimizer):
            for param, state in value.state.items():
                for key, tensor in state.items():
                    if param in saved[name]:
                        tensor.copy_(saved[name][param][key])
                    else:
                        tensor.zero_()
    if learner.device.type == "cuda":
        torch.cuda.set_rng_state(saved["rng"], learner.device)
    elif learner.device.type == "cpu":
        torch.set_rng_state(saved["rng"])


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The state of the random generator an update on `device` draws from (None for a device without one: meta)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state() if device.type == "cpu" else None


class StepMetrics:
    """Every step's metrics, kept on the device without a host sync: their sums since the last log (a logged value
    is the mean over those steps, not the last batch's) and the first step whose metrics were NaN or inf."""

    def __init__(self, device: torch.device):
        self.sums, self.count, self.names = None, 0, []
        self.first_bad_step, self.bad_metrics = torch.tensor(-1, device=device), None

    def observe(self, metrics: dict[str, torch.Tensor], step: int) -> None:
        values = torch.stack([v.detach().float() for v in metrics.values()])
        self.sums = values if self.sums is None else self.sums + values
        self.count, self.names = self.count + 1, list(metrics)
        finite = torch.isfinite(values)
        newly_bad = (self.first_bad_step < 0) & ~finite.all()
        self.first_bad_step = torch.where(newly_bad, step, self.first_bad_step)
        self.bad_metrics = ~finite if self.bad_metrics is None else torch.where(newly_bad, ~finite, self.bad_metrics)

    def pop_means(self) -> dict[str, float]:
        means = dict(zip(self.names, (self.sums / self.count).tolist()))
        self.sums, self.count = None, 0
        return means

    def check(self, epoch: int, checkpoint_path: str) -> None:
        step = int(self.first_bad_step)
        if step >= 0:
            names = [name for name, bad in zip(self.names, self.bad_metrics.tolist()) if bad]
            kept = checkpoint_path if os.path.isfile(checkpoint_path) else "none written yet"
            raise TrainingDiverged(f"non-finite {', '.join(names)} at gradient step {step} (epoch {epoch}); "
                                   f"last good checkpoint: {kept}")


class TrainingDiverged(RuntimeError):
    pass


PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL, "try again later": scripts/reproduce.py resumes such a run later


class Preempted(RuntimeError):
    pass


class Preemption:
    """SIGTERM (what SLURM, Ray and Kubernetes send before they kill) or SIGINT (Ctrl-C) asks the run to stop after
    the current gradient step with a checkpoint. A second Ctrl-C stops it at once; a repeated SIGTERM (a scheduler
    and scripts/reproduce.py may both send one) changes nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = None
        self.previous = {sig: signal.signal(sig, self.request) for sig in self.SIGNALS}

    def request(self, signum, frame) -> None:
        if self.requested is None:  # said at once: a paper-size update can take seconds on a CPU
            print(f"\n{signal.Signals(signum).name}: finishing the current gradient step, then a checkpoint"
                  + (" (Ctrl-C again stops at once, without one)" if signum == signal.SIGINT else ""),
                  file=sys.stderr, flush=True)
        self.requested = self.requested or signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def release(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class EvaluationWorkers:
    """--eval-workers: the evaluation's environments stepped in worker processes, so that on a GPU machine the
    ~2 s of MuJoCo per task and evaluation do not run one environment after another while the GPU idles. The
    policy's forward stays one batched call in the training process: the same actions, so the returns are
    bitwise those of Episodes. Started once per run, from a forkserver (no copy of CUDA or of torch's threads);
    the workers ignore Ctrl-C (the training process checkpoints and ends them)."""

    def __init__(self, count: int):
        context = multiprocessing.get_context("forkserver")
        self.pipes = []
        for _ in range(count):
            here, there = context.Pipe()
            context.Process(target=step_episodes_forever, args=(there,), daemon=True).start()
            there.close()
            self.pipes.append(here)

    def reset(self, task: str, seeds: list[int]) -> np.ndarray:
        self.busy = [(pipe, part.tolist()) for pipe, part in zip(self.pipes, np.array_split(seeds, len(self.pipes)))
                     if len(part)]
        for pipe, part in self.busy:
            pipe.send(("reset", task, part))
        return np.concatenate([self.receive(pipe) for pipe, _ in self.busy])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        begin = 0
        for pipe, part in self.busy:
            pipe.send(("step", actions[begin:begin + len(part)]))
            begin += len(part)
        results = [self.receive(pipe) for pipe, _ in self.busy]
        return (np.concatenate([obs for obs, _, _ in results]), np.concatenate([rewards for _, rewards, _ in results]),
                results[0][2])

    @staticmethod
    def receive(pipe):
        answer = pipe.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)


def step_episodes_forever(pipe) -> None:
    """An evaluation worker: ("reset", task, seeds) -> first observations of fresh environments, ("step",
    actions) -> observations, rewards, done; None ends it. An error goes back to be raised there."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    episodes = Episodes()
    while (message := pipe.recv()) is not None:
        try:
            pipe.send(episodes.reset(*message[1:]) if message[0] == "reset" else episodes.step(message[1]))
        except Exception as exc:  # noqa: BLE001  (any failure is the training process's to report)
            pipe.send(exc)


def evaluation_workers(args: Args, device: torch.device) -> EvaluationWorkers | None:
    """--eval-workers, or by default on CUDA one per episode up to the cores but one (on a CPU the cores train)."""
    count = args.eval_workers
    if count is None:
        count = min(args.eval_episodes, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0
    return EvaluationWorkers(count) if count > 0 else None


def check_video_support() -> None:
    """Fail before any work when no offscreen renderer or mp4 writer is there, saying how to get one."""
    if os.environ.get("MUJOCO_GL", "disable") == "disable":
        raise UsageError("--capture-video needs an offscreen renderer: MUJOCO_GL=egl on a GPU machine, or "
                         "MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa with Debian's libosmesa6 on CPU")
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UsageError("--capture-video writes mp4 with imageio: pip install imageio imageio-ffmpeg") from None


def capture_video(actor: Actor, task: str, seed: int, device: torch.device, folder: str) -> str:
    """Render one deterministic episode offscreen to {folder}/{task}.mp4."""
    import imageio  # checked by check_video_support

    backend = os.environ["MUJOCO_GL"]
    env = make_env(task, eval_seed(seed, 0))
    frames, done = [], False
    try:
        obs, _ = env.reset()
        while not done:
            frames.append(env.render())
            task_id = torch.full((1,), TASKS.index(task), device=device)
            obs, _, _, done, _ = env.step(actor.act(torch.as_tensor(obs[None], device=device), task_id)[0].float().cpu().numpy())
    except Exception as exc:
        raise UsageError(f"rendering with MUJOCO_GL={backend} failed ({type(exc).__name__}: {exc}); for osmesa "
                         "install Debian's libosmesa6 (apt-get install libosmesa6), for egl a GPU driver") from None
    finally:
        env.close()
    path = os.path.join(folder, f"{task}.mp4")
    imageio.mimwrite(path, frames, fps=40)  # the walker's control step is 25 ms
    return path


# ----------------------------------------------------------------------------------------------- evaluation only
def evaluate_checkpoint(args: Args, checkpoint: dict) -> dict:
    """--eval-only: load the weights, evaluate every task of the run, write eval.json beside the checkpoint."""
    check_args(args)
    if args.capture_video:
        check_video_support()
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    if device.type == "cuda":  # TF32 as in training's evaluations (resolve_precision)
        torch.backends.cuda.matmul.allow_tf32 = resolve_precision(args, device, None, resumed=True)[1]
    learner = Learner(args, device)
    learner.load_state_dict(checkpoint["learner"])
    workers = evaluation_workers(args, device)
    report = {"checkpoint": args.checkpoint, "eval_episodes": args.eval_episodes, "seed": args.seed, "tasks": {}}
    for task in TASKS:
        returns = evaluate(learner.actor, task, args.eval_episodes, args.seed, device, workers)
        report["tasks"][task] = {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "returns": returns}
        print(f"{task}: {np.mean(returns):.1f} ± {np.std(returns):.1f} over {args.eval_episodes} episodes", flush=True)
        if args.capture_video:
            print(f"video: {capture_video(learner.actor, task, args.seed, device, os.path.dirname(args.checkpoint))}")
    path = os.path.join(os.path.dirname(args.checkpoint), "eval.json")
    write_json(path, report)
    finals = ", ".join(f"{task} {entry['mean']:.1f}" for task, entry in report["tasks"].items())
    print(f"done: {finals} over {args.eval_episodes} episodes each; written to {path}", flush=True)
    return report


def main() -> None:
    try:
        args, checkpoint = parse_args()
        if args.eval_only:
            evaluate_checkpoint(args, checkpoint)
        else:
            train(args, checkpoint if args.resume is not None else None, typed_flags(sys.argv[1:]))
    except (UsageError, TrainingDiverged, WriteFailed) as exc:
        sys.exit(f"error: {exc}")
    except Preempted as exc:
        print(f"stopped: {exc}", file=sys.stderr, flush=True)
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    main()
