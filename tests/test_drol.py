"""DROL's routing, winner-only gradients, the prior, the official inference options and option
checks, and the separated-regions behaviour of routed BC (issues 2, 16.4).

The efficient loss (winners recomputed) is compared with the official naive formulation, which
differentiates through all N*K candidates (values, gradients, every metric by name and value,
the next-state options), through a whole update in test_agents_common.py
(test_same_key_gives_the_official_update)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
from helpers import (
    REPO,
    agent_file,
    interval_dataset,
    run_main,
    small_config,
    tiny_agent,
    toy_dataset,
    train_fused,
    with_config,
)

from drol_jax.errors import ConfigError
from drol_jax.hyperparameters import check_agent_config

DROL_PATH = os.path.join(REPO, 'agents', 'drol.py')
drol = agent_file(DROL_PATH).module
DROLAgent = agent_file(DROL_PATH).agent_class


def test_defaults_match_the_paper():
    config = drol.get_config()
    assert config.agent_name == 'drol'
    assert config.num_candidates == 16 and config.critic_num_candidates == 1
    assert config.bc_coef == 1.0 and config.q_coef == 1.0 and config.normalize_q_loss
    assert config.actor_q_agg == 'min'
    # The official agent's remaining options, with its defaults (off: one latent, one pass).
    assert config.critic_selection_q_agg == 'min'
    assert not config.inference_best_of_n and config.inference_num_samples == 32
    assert not config.inference_use_density_filter and config.inference_dense_topk == 8
    assert config.inference_q_agg == 'mean'
    assert 'inference_num_candidates' not in config  # One way to say best-of-N.


@pytest.mark.parametrize(
    'name, value, requirement',
    [
        ('critic_selection_q_agg', 'max', "'mean' or 'min'"),
        ('inference_best_of_n', 'yes', 'True or False'),
        ('inference_num_samples', 0, 'an integer >= 1 (N, candidates for best-of-N)'),
        ('inference_use_density_filter', 'on', 'True or False'),
        ('inference_dense_topk', 0, 'an integer >= 1'),
        ('inference_q_agg', 'median', "'mean' or 'min'"),
    ],
)
def test_official_options_are_checked(name, value, requirement):
    file = agent_file(DROL_PATH)
    # A plain dict: a ConfigDict would refuse the wrong types before the check sees them.
    config = {**file.default_config().to_dict(), name: value}
    with pytest.raises(ConfigError) as raised:
        check_agent_config(config, file.hyperparameter_checks)
    assert str(raised.value) == f'--agent.{name} must be {requirement}, got {value!r}.'


def test_distances_are_per_dimension_means():
    candidates = jnp.array([[[0.0, 0.0], [1.0, 1.0], [0.5, -0.5]]])  # (1, 3, 2)
    actions = jnp.array([[1.0, 0.0]])
    expected = np.array([[(1 + 0) / 2, (0 + 1) / 2, (0.25 + 0.25) / 2]])
    np.testing.assert_allclose(drol.candidate_distances(candidates, actions), expected, rtol=1e-6)


def test_routing_picks_nearest_candidate():
    candidates = jnp.array(
        [
            [[-0.9], [0.0], [0.8]],
            [[-0.9], [0.0], [0.8]],
            [[-0.9], [0.0], [0.8]],
        ]
    )
    actions = jnp.array([[-0.7], [0.1], [0.95]])
    winners = drol.route_to_nearest(drol.candidate_distances(candidates, actions))
    np.testing.assert_array_equal(winners, [0, 1, 2])


def test_routing_ties_go_to_lowest_index():
    # Both candidates are exactly 0.5 away from the action: the first one must win, every time.
    candidates = jnp.array([[[0.5], [-0.5], [0.9]], [[0.2], [0.2], [0.2]]])
    actions = jnp.array([[0.0], [0.2]])
    for _ in range(3):
        np.testing.assert_array_equal(
            drol.route_to_nearest(drol.candidate_distances(candidates, actions)), [0, 0]
        )


def test_routing_balance_and_spread():
    winners = jnp.array([0, 0, 1, 1])
    balance = drol.routing_balance(winners, 4)
    np.testing.assert_allclose(balance['best_idx_entropy'], np.log(2), rtol=1e-6)
    np.testing.assert_allclose(balance['best_idx_max_prob'], 0.5)
    candidates = jnp.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    # Pairwise per-dimension squared distances: 0.5, 0.5, 1.0 -> mean 2/3.
    np.testing.assert_allclose(drol.candidate_spread(candidates), 2 / 3, rtol=1e-6)
    assert float(drol.candidate_spread(candidates[:, :1])) == 0.0
    # Per-dimension squared distances to the mean (1/3, 1/3): 1/9, 5/18, 5/18 -> mean 2/9.
    np.testing.assert_allclose(drol.candidate_divergence(candidates), 2 / 9, rtol=1e-6)


def test_winner_only_gradient_wrt_candidate_outputs():
    """With the identity as policy, latents are the candidate outputs: only winners get gradient."""
    rng = np.random.default_rng(0)
    n, k, d = 6, 5, 3
    latents = jnp.asarray(rng.uniform(-0.9, 0.9, (n, k, d)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-0.9, 0.9, (n, d)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(d,)), jnp.float32)

    def loss(z):
        return drol.routed_actor_loss(
            policy=lambda x: x,
            q_values=lambda a: jnp.stack([a @ weights, a @ weights + 1.0]),
            latents=z,
            actions=actions,
            bc_coef=1.0,
            q_coef=1.0,
            actor_q_agg='min',
            normalize_q_loss=True,
        )[0]

    grads = np.asarray(jax.jit(jax.grad(loss))(latents))
    winners = np.asarray(drol.route_to_nearest(drol.candidate_distances(latents, actions)))
    for i in range(n):
        for j in range(k):
            if j == winners[i]:
                assert np.any(grads[i, j] != 0)
            else:
                assert np.all(grads[i, j] == 0.0), (i, j)


def test_prior_is_uniform_in_the_ball():
    sample = jax.jit(drol.sample_ball_prior, static_argnums=(1, 2))
    for dim in (1, 2, 5):
        z = np.asarray(sample(jax.random.PRNGKey(dim), (40_000,), dim))
        radius = np.linalg.norm(z, axis=-1) / np.sqrt(dim)
        assert radius.max() <= 1.0 + 1e-6
        # Uniform in volume <=> (r / R)^d ~ U(0, 1): compare quantiles.
        levels = np.linspace(0.05, 0.95, 19)
        np.testing.assert_allclose(np.quantile(radius**dim, levels), levels, atol=0.01)
        # Isotropic: E[z z^T] = R^2 / (d + 2) I with R^2 = d.
        covariance = z.T @ z / len(z)
        np.testing.assert_allclose(covariance, np.eye(dim) * dim / (dim + 2), atol=0.03)


# ---------------------------------------------------------------------------------------------
# Inference: the official best-of-N and its density filter.

BEST_OF_N = dict(inference_best_of_n=True, inference_use_density_filter=True)
INFERENCE_CASES = [
    BEST_OF_N,  # N = 32, the 8 densest, ranked by the mean Q.
    dict(inference_best_of_n=True, inference_num_samples=8),  # No filter.
    # More to keep (8) than candidates: all are kept; ranked by the min Q.
    dict(BEST_OF_N, inference_num_samples=4, inference_q_agg='min'),
    dict(inference_use_density_filter=True),  # Best-of-N off: the filter does nothing.
]


def test_inference_options_match_the_official_sample_actions():
    """Each option against the official ``sample_actions``, on a batch and for one state."""
    agents = [with_config(tiny_agent(DROL_PATH).agent, **o) for o in INFERENCE_CASES]
    observations = toy_dataset()['observations'][:16]
    # (case, observations): every case batched, and best-of-N unbatched (for one state the
    # official agent adds a batch axis; the single pass is compared in test_agents_common.py).
    inputs = [(i, observations) for i in range(len(agents))] + [(0, observations[0])]

    @jax.jit
    def ours_and_official(agents, seed):
        # One program for every case, so that they compile together.
        return [
            (
                agents[i].sample_actions(obs, seed=seed),
                references.drol_sample_actions(agents[i], obs, seed),
            )
            for i, obs in inputs
        ]

    for k in range(2):
        results = ours_and_official(agents, jax.random.PRNGKey(k))
        for (i, _), (ours, official) in zip(inputs, results, strict=True):
            assert ours.shape == official.shape, INFERENCE_CASES[i]
            np.testing.assert_allclose(ours, official, atol=1e-6, err_msg=str(INFERENCE_CASES[i]))
        # Best-of-N with the density filter acts differently from the default single pass.
        best_of_n, single_pass = results[0][0], results[len(agents) - 1][0]
        assert np.abs(np.asarray(best_of_n) - np.asarray(single_pass)).max() > 1e-3


def test_density_filter_keeps_the_densest_candidates():
    # Mean squared distances to the others: 0.287, 0.22, 0.647, 0.18.
    candidates = jnp.array([[[0.0], [0.1], [0.9], [0.2]]])
    np.testing.assert_allclose(drol.densest(candidates, 2), [[[0.2], [0.1]]])
    np.testing.assert_allclose(drol.densest(candidates, 9), [[[0.2], [0.1], [0.0], [0.9]]])


@pytest.mark.slow
def test_best_of_n_with_the_density_filter_runs_through_main(tmp_path):
    result = run_main(
        '--agent=agents/drol.py',
        '--agent.inference_best_of_n=True',
        '--agent.inference_use_density_filter=True',
        '--env_name=toy-multimodal',
        '--offline_steps=20',
        '--log_interval=10',
        '--eval_interval=20',
        '--eval_episodes=2',
        f'--save_dir={tmp_path}',
        '--agent.actor_hidden_dims=(32,32)',
        '--agent.value_hidden_dims=(32,32)',
        '--agent.batch_size=32',
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'debug' / 'toy-multimodal' / 'drol' / 'seed0'
    flags = (run_dir / 'flags.json').read_text()
    assert '"inference_use_density_filter": true' in flags
    assert (run_dir / 'eval.csv').read_text().count('\n') == 3  # Header, steps 1 and 20.


# ---------------------------------------------------------------------------------------------
# Routed BC on separated intervals (long training).

INTERVALS = [(-0.9, -0.5), (0.5, 0.9)]  # Their mean (0) lies in the gap.
SEEDS = (0, 1)


def shares(values):
    inside = [np.mean((values >= lo - 0.05) & (values <= hi + 0.05)) for lo, hi in INTERVALS]
    return np.array(inside), 1.0 - sum(inside)


@pytest.mark.slow
def test_routed_bc_covers_separated_intervals_while_mse_regresses_to_the_mean():
    import optax

    from drol_jax.networks import ConditionedPolicy

    dataset = interval_dataset(INTERVALS)
    # Gap candidates rarely win, so the z -> a map steepens slowly: the share of outputs in the
    # gap falls over thousands of updates (about 0.44 -> 0.22 -> 0.09 at 1k / 3k / 6k; measured
    # at 6k over seeds 0-5: 0.085-0.117 in the gap, at least 0.43 in each interval).
    config = small_config(drol.get_config(), num_candidates=16, q_coef=0.0, lr=3e-3)
    config.actor_hidden_dims = config.value_hidden_dims = (64, 64)
    config.batch_size = 64
    agents = train_fused(DROLAgent, config, dataset, 6000, seeds=SEEDS, optimize=True)
    observations = jnp.zeros((4000, 2))
    gaps = []
    for seed, agent in zip(SEEDS, agents, strict=True):
        actions = np.asarray(agent.sample_actions(observations, seed=jax.random.PRNGKey(7)))
        per_interval, between = shares(actions[:, 0])
        assert per_interval.min() > 0.3, (seed, per_interval)
        gaps.append(between)
    assert max(gaps) < 0.25 and np.mean(gaps) < 0.15, gaps

    # Plain single-output MSE regression on the same data ends between the intervals.
    net = ConditionedPolicy((64, 64), 1)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(
            lambda p: jnp.mean((net.apply(p, dataset['observations']) - dataset['actions']) ** 2)
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(500):
        params, opt_state = step(params, opt_state)
    prediction = float(net.apply(params, jnp.zeros((1, 2)))[0, 0])
    assert abs(prediction - dataset['actions'].mean()) < 0.05
    assert shares(np.array([prediction]))[1] == 1.0  # In a gap between intervals.
