"""Unit tests of the algorithms' building blocks against direct computations on tiny inputs."""

import math

import numpy as np
import pytest
import torch

import csac
import hcsac
import mtcsac


def test_cql_logsumexp_matches_eq9_brute_force():
    rng = np.random.default_rng(0)
    num_critics, n, batch = 2, 3, 4
    q_uniform, q_policy, q_policy_next = (rng.normal(size=(num_critics, n, batch)) for _ in range(3))
    log_prob, log_prob_next = rng.normal(size=(n, batch)), rng.normal(size=(n, batch))
    q_data = rng.normal(size=(num_critics, batch))
    expected = np.zeros((num_critics, batch))
    for k in range(num_critics):
        for b in range(batch):
            terms = [q_uniform[k, j, b] - 6 * math.log(0.5) for j in range(n)]  # Q / U(a), U(a) = 0.5^6
            terms += [q_policy[k, j, b] - log_prob[j, b] for j in range(n)]  # Q / pi(a|s)
            terms += [q_policy_next[k, j, b] - log_prob_next[j, b] for j in range(n)]  # Q / pi(a|s')
            expected[k, b] = math.log(sum(math.exp(t) for t in terms))
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    for module in (csac, mtcsac, hcsac):
        got = module.cql_logsumexp(*map(as_tensor, (q_uniform, q_policy, q_policy_next, log_prob, log_prob_next)))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
        # the penalty (Eq. 8) is its gap to Q on the data, averaged over the batch
        np.testing.assert_allclose((got - as_tensor(q_data)).mean(-1).numpy(), (expected - q_data).mean(-1), rtol=1e-12)


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    mean, log_std = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64).clamp(-2, 1)
    actions, log_prob = csac.sample_tanh_gaussian(mean, log_std, num_samples=7)
    assert actions.shape == (7, 5, 6) and log_prob.shape == (7, 5)
    assert actions.abs().max() < 1
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.TanhTransform())
    np.testing.assert_allclose(log_prob.numpy(), reference.log_prob(actions).sum(-1).numpy(), rtol=1e-6, atol=1e-6)


def test_soft_update():
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    csac.soft_update(target, source, tau=0.01)
    for old, new, src in zip(before, target.parameters(), source.parameters()):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * src)


def critic_member(critic, k: int, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Critic k of the ensemble computed alone, layer by layer with plain matmuls."""
    x = torch.cat([states, actions], -1)
    layers = [m for m in critic.net if isinstance(m, csac.VectorizedLinear)]
    for i, layer in enumerate(layers):
        x = x @ layer.weight[k] + layer.bias[k]
        x = torch.relu(x) if i < len(layers) - 1 else x
    return x[..., 0]


def test_vectorized_critic_equals_two_independent_mlps():
    torch.manual_seed(0)
    critic = csac.Critic(hidden_dim=16, num_layers=2)
    obs, actions = torch.randn(5, 24), torch.randn(3, 5, 6)
    q = critic(obs, actions)
    assert q.shape == (2, 3, 5)
    for k in range(2):
        torch.testing.assert_close(q[k], critic_member(critic, k, obs.expand(3, 5, 24), actions))


@pytest.mark.parametrize("mode,in_dim", [("add", 24), ("concat", 48)])
def test_task_embedding_add_and_concat(mode, in_dim):
    torch.manual_seed(0)
    embedding = mtcsac.TaskEmbedding(mode)
    obs, task_ids = torch.randn(4, 24), torch.tensor([0, 1, 1, 0])
    z = embedding(obs, task_ids)
    assert z.shape == (4, in_dim) and embedding.out_dim == in_dim
    table = embedding.embedding.weight
    expected = obs + table[task_ids] if mode == "add" else torch.cat([obs, table[task_ids]], -1)
    torch.testing.assert_close(z, expected)
    actor, critic = mtcsac.Actor(16, 2, mode), mtcsac.Critic(16, 2, mode)
    mean, log_std = actor(obs, task_ids)
    assert mean.shape == log_std.shape == (4, 6)
    assert critic(obs, task_ids, torch.randn(10, 4, 6)).shape == (2, 10, 4)
    # the task changes the output: the same state under the other task gives another action
    assert not torch.allclose(actor.act(obs, task_ids), actor.act(obs, 1 - task_ids))


def test_relabel_threshold_and_shared_set_match_numpy():
    rng = np.random.default_rng(0)
    n = 1000
    source = rng.integers(0, 2, n)
    q = rng.normal(size=(2, n)) + np.array([[0.5], [-0.5]])
    thresholds, shared = hcsac.thresholds_and_shared(torch.tensor(q), torch.tensor(source), top_fraction=0.05)
    for i in range(2):
        tau = np.percentile(q[i][source == i], 95)  # the authors' code
        assert thresholds[i].item() == pytest.approx(tau, rel=1e-12)
        brute = np.array([source[r] != i and q[i, r] >= tau for r in range(n)])
        np.testing.assert_array_equal(shared[i].numpy(), brute)
        # about 5% of task i's own data reaches its own threshold
        assert abs((q[i][source == i] >= tau).mean() - 0.05) < 0.01


@pytest.mark.parametrize("relabel_reward", [True, False])
def test_d_star_is_rebuilt_from_the_original(relabel_reward):
    n = 6
    original = {"observations": torch.arange(n, dtype=torch.float32)[:, None].expand(n, 24),
                "actions": torch.zeros(n, 6), "next_observations": torch.zeros(n, 24),
                "task_ids": torch.tensor([0, 0, 0, 1, 1, 1]),
                "rewards": torch.tensor([.1, .2, .3, .4, .5, .6]),
                "task_rewards": torch.tensor([[.1, .2, .3, .7, .8, .9], [.9, .8, .7, .4, .5, .6]])}
    shared = torch.tensor([[0, 0, 0, 1, 0, 1], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    d_star = hcsac.build_d_star(original, shared, relabel_reward)
    torch.testing.assert_close(d_star["rows"], torch.tensor([0, 1, 2, 3, 5, 3, 4, 5, 1]))
    torch.testing.assert_close(d_star["task_ids"], torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1]))
    torch.testing.assert_close(d_star["observations"][:, 0], d_star["rows"].float())
    shared_rewards = [.7, .9, .8] if relabel_reward else [.4, .6, .2]  # task i's reward, or the source's
    expected = [.1, .2, .3, *shared_rewards[:2], .4, .5, .6, shared_rewards[2]]
    torch.testing.assert_close(d_star["rewards"], torch.tensor(expected))


def test_conservative_q_values_in_chunks_equal_one_call():
    torch.manual_seed(0)
    args = hcsac.Args(hidden_dim=16, num_layers=2)
    learner = hcsac.Learner(args, torch.device("cpu"))
    data = {"observations": torch.randn(100, 24), "actions": torch.rand(100, 6) * 2 - 1}
    q = hcsac.conservative_q_values(learner, data, batch_size=7)
    assert q.shape == (2, 100)
    for task_id in range(2):
        direct = learner.critic(data["observations"], torch.full((100,), task_id), data["actions"]).min(0).values
        torch.testing.assert_close(q[task_id], direct.detach())


def reference_critic_loss(learner, obs, actions, rewards, next_obs, noise, uniform, args):
    """A plain, loop-by-loop computation of the CSAC critic loss (Eq. 8-9) with the same random draws."""
    n = args.num_sampled_actions
    mean, log_std = learner.actor(torch.cat([obs, next_obs]))
    std = log_std.exp()
    total = 0.0
    for k in range(2):
        def q(states, acts):
            return critic_member(learner.critic, k, states, acts)

        def q_target(states, acts, j):
            return critic_member(learner.critic_target, j, states, acts)

        batch = len(obs)
        def policy_sample(j, rows):
            u = mean[rows] + std[rows] * noise[j, rows]
            a = torch.tanh(u)
            dist = torch.distributions.Normal(mean[rows], std[rows])
            return a, (dist.log_prob(u) - torch.log(1 - a.pow(2) + 1e-12)).sum(-1)

        next_a, _ = policy_sample(0, slice(batch, 2 * batch))
        target = rewards + args.gamma * torch.min(q_target(next_obs, next_a, 0), q_target(next_obs, next_a, 1))
        q_data = q(obs, actions)
        terms = [q(obs, uniform[j]) - 6 * math.log(0.5) for j in range(n)]
        for j in range(1, n + 1):
            a, lp = policy_sample(j, slice(0, batch))
            terms.append(q(obs, a) - lp)
        for j in range(1, n + 1):
            a, lp = policy_sample(j, slice(batch, 2 * batch))
            terms.append(q(obs, a) - lp)
        penalty = torch.logsumexp(torch.stack(terms), 0) - q_data
        total = total + ((q_data - target) ** 2).mean() + args.cql_weight * penalty.mean()
    return total


def test_update_matches_a_plain_reference_computation(monkeypatch):
    """The fused update (one actor forward, one critic call) computes the same critic loss and gradients."""
    torch.manual_seed(0)
    args = csac.Args(hidden_dim=16, num_layers=2, num_sampled_actions=3)
    learner = csac.Learner(args, torch.device("cpu"))
    batch = 8
    obs, next_obs = torch.randn(batch, 24), torch.randn(batch, 24)
    actions, rewards = torch.rand(batch, 6) * 2 - 1, torch.rand(batch)
    torch.manual_seed(1)
    noise = torch.randn(1 + args.num_sampled_actions, 2 * batch, 6)
    uniform = torch.rand(args.num_sampled_actions, batch, 6) * 2 - 1
    draws = iter([noise, uniform])
    monkeypatch.setattr(csac.torch, "randn", lambda *a, **k: next(draws))
    monkeypatch.setattr(csac.torch, "rand", lambda *a, **k: (next(draws) + 1) / 2)
    critic_before = [p.detach().clone() for p in learner.critic.parameters()]
    expected = reference_critic_loss(learner, obs, actions, rewards, next_obs, noise, uniform, args)
    expected_grads = torch.autograd.grad(expected, list(learner.critic.parameters()))
    captured = {}
    original_step = learner.critic_optimizer.step

    def capture_then_step():
        captured["grads"] = [p.grad.clone() for p in learner.critic.parameters()]
        original_step()

    learner.critic_optimizer.step = capture_then_step
    metrics = learner.update(obs, actions, rewards, next_obs)
    assert metrics["critic_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(captured["grads"], expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, learner.critic.parameters()))


@pytest.mark.parametrize("module", [csac, mtcsac, hcsac], ids=lambda m: m.__name__)
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_critic_fused_cpu_layers_equal_the_plain_ensemble(module, bf16):
    """The CPU speed path (ReLU fused into oneDNN's matmul, member by member) gives the plain path's Q-values and
    gradients, for the critic's parameters and for the actions (the actor's loss differentiates through them)."""
    if not module.onednn_fusion_applies(torch.zeros(1)):
        pytest.skip("no oneDNN on this machine")
    torch.manual_seed(0)
    extra = {} if module is csac else {"task_embedding": "add"}
    fused_critic = module.CPUFusedCritic(hidden_dim=32, num_layers=2, **extra)
    plain_critic = module.Critic(hidden_dim=32, num_layers=2, **extra)
    plain_critic.load_state_dict(fused_critic.state_dict())
    obs, actions = torch.randn(16, 24), (torch.rand(5, 16, 6) * 2 - 1).requires_grad_()
    inputs = (obs, actions) if module is csac else (obs, torch.randint(0, 2, (16,)), actions)

    def q_and_grads(critic):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            q = critic(*inputs)
        grads = torch.autograd.grad((q.float() ** 2).sum(), [actions, *critic.parameters()])
        return q, grads

    fused_q, fused_grads = q_and_grads(fused_critic)
    plain_q, plain_grads = q_and_grads(plain_critic)
    assert fused_q.dtype == plain_q.dtype == (torch.bfloat16 if bf16 else torch.float32)
    tolerance = {"rtol": 2e-2, "atol": 1e-2} if bf16 else {}  # bf16: a few roundings apart at most
    torch.testing.assert_close(fused_q, plain_q, **tolerance)
    for fused, plain in zip(fused_grads, plain_grads):
        torch.testing.assert_close(fused, plain, **tolerance)
