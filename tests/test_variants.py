"""DROL's variants (issue 19): each one file in agents/, each reducing exactly to DROL.

Fast tier: every variant at its stated setting gives DROL's total loss, DROL's metrics and
DROL's gradients on shared parameters, batch and key; each variant's own mechanism on inputs
whose answer is known (identity policies, hand-made distances); each variant's conventions.
Slow tier: each variant trains through main.py, and a bad value of its own hyperparameter is its
own one-line error.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    REPO,
    TINY,
    agent_file,
    bootstrapping_batch,
    one_line_error,
    read_csv_rows,
    run_main,
    small_config,
    tiny_agent,
    with_config,
)

from drol_jax.analysis import variants as benchmark
from drol_jax.errors import ConfigError
from drol_jax.hyperparameters import check_agent_config

DROL_PATH = os.path.join(REPO, 'agents', 'drol.py')
VARIANT_PATHS = {
    name: os.path.join(REPO, 'agents', f'drol_{name}.py')
    for name in ('soft', 'score', 'budget', 'support')
}
soft = agent_file(VARIANT_PATHS['soft']).module
score = agent_file(VARIANT_PATHS['score']).module
budget = agent_file(VARIANT_PATHS['budget']).module
support = agent_file(VARIANT_PATHS['support']).module
drol = agent_file(DROL_PATH).module

# The setting at which each variant is DROL (the reduction its docstring states).
REDUCTIONS = {
    'soft': dict(temperature_init=0.0, temperature_final=0.0),
    'score': dict(score_beta=0.0, routing_metric=False),
    'budget': dict(coverage_epsilon=0.0),
    'support': dict(support_coef=0.0),
}


def identity_loss_settings(q_coef=1.0):
    return dict(bc_coef=1.0, q_coef=q_coef, actor_q_agg='min', normalize_q_loss=True)


def linear_q(weights):
    """A two-member ensemble of linear critics (distinct members, so 'min' matters)."""
    return lambda a: jnp.stack([a @ weights, a @ weights + 0.1 * a[..., 0]])


def random_inputs(n=6, k=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    latents = jnp.asarray(rng.uniform(-0.9, 0.9, (n, k, d)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-0.9, 0.9, (n, d)), jnp.float32)
    return latents, actions, jnp.asarray(rng.normal(size=(d,)), jnp.float32)


# ---------------------------------------------------------------------------------------------
# Reduction to DROL: the actor loss, every DROL metric and the gradients on shared inputs. (The
# critic's loss and the rest of the update are DROL's own methods, which no variant overrides.)


def variant_on_drol_parameters(name, reduced=True):
    """The tiny variant agent with the tiny DROL agent's parameters, key and config.

    ``reduced``: at the variant's reduction setting (else at its own defaults). Only the score
    variant has modules of its own (its head comes from its own tiny agent); the others are
    built on DROL's train state directly.
    """
    drol_agent = tiny_agent(DROL_PATH).agent
    file = agent_file(VARIANT_PATHS[name])
    own = small_config(file.default_config()).to_dict()
    config = {**own, **drol_agent.config, 'agent_name': own['agent_name']}
    if reduced:
        config.update(REDUCTIONS[name])
    network = drol_agent.network
    if name == 'score':
        variant_network = tiny_agent(VARIANT_PATHS[name]).agent.network
        params = {**variant_network.params, **network.params}
        network = variant_network.replace(params=params)
    return file.agent_class(
        rng=drol_agent.rng, network=network, config=flax.core.FrozenDict(config)
    )


@pytest.fixture(scope='module')
def reduction_results():
    """``(loss, info, grads)`` of DROL's actor loss and of each variant's, on one batch and key."""
    agents = [tiny_agent(DROL_PATH).agent] + [variant_on_drol_parameters(n) for n in REDUCTIONS]

    @jax.jit
    def losses_and_gradients(agents, batch, key):
        results = []
        for agent in agents:
            (loss, info), grads = jax.value_and_grad(
                lambda p, a=agent: a.actor_loss(batch, p, key), has_aux=True
            )(agent.network.params)
            results.append((loss, info, grads))
        return results

    results = losses_and_gradients(agents, bootstrapping_batch(32), jax.random.PRNGKey(3))
    return results[0], dict(zip(REDUCTIONS, results[1:], strict=True))


@pytest.mark.parametrize('name', list(REDUCTIONS))
def test_variant_at_its_reduction_setting_is_drol(reduction_results, name):
    (drol_loss, drol_info, drol_grads), results = reduction_results
    loss, info, grads = results[name]
    if name == 'score':  # The score head's own loss is added to the total.
        loss = loss - info['score_loss']
    np.testing.assert_allclose(loss, drol_loss, rtol=2e-6)
    for metric, value in drol_info.items():
        np.testing.assert_allclose(info[metric], value, rtol=2e-5, atol=1e-7, err_msg=metric)
    for module, drol_module_grads in drol_grads.items():
        jax.tree_util.tree_map(
            lambda ours, reference, m=module: np.testing.assert_allclose(
                ours, reference, rtol=1e-4, atol=1e-6, err_msg=m
            ),
            grads[module],
            drol_module_grads,
        )
    # DROL's actor gets a gradient (so the comparison compares something), the critic none.
    actor = jax.tree_util.tree_leaves(grads['modules_actor_onestep_flow'])
    assert any(np.abs(g).max() > 0 for g in actor)
    assert all(np.all(g == 0) for g in jax.tree_util.tree_leaves(grads['modules_critic']))
    if name == 'soft':  # The weights were one-hot.
        assert float(info['winner_weight']) == 1.0 and float(info['responsibility_entropy']) == 0


def test_score_head_learns_only_from_its_own_loss(reduction_results):
    _, results = reduction_results
    _, info, grads = results['score']
    assert set(grads) - {'modules_routing_score'} == set(tiny_agent(DROL_PATH).agent.network.params)
    assert np.isfinite(float(info['score_loss']))
    head = jax.tree_util.tree_leaves(grads['modules_routing_score'])
    assert all(np.abs(g).max() > 0 for g in head)


def test_one_hot_responsibilities_give_drols_loss_and_gradient():
    """epsilon = 0, and a temperature small enough to be one-hot in float32, are DROL."""
    latents, actions, weights = random_inputs(n=8, k=4, d=2, seed=3)
    settings = identity_loss_settings()

    @jax.jit
    def values_and_grads(z):
        def reference(z):
            return drol.routed_actor_loss(lambda x: x, linear_q(weights), z, actions, **settings)

        def ours(responsibilities):
            return lambda z: soft.soft_routed_actor_loss(
                lambda x: x, linear_q(weights), z, actions, responsibilities, **settings
            )

        forms = [
            reference,
            ours(lambda d: soft.epsilon_responsibilities(d, 0.0)),
            ours(lambda d: soft.softmin_responsibilities(d, 1e-9)),
        ]
        return [jax.value_and_grad(f, has_aux=True)(z) for f in forms]

    (reference, reference_info), reference_grad = values_and_grads(latents)[0]
    for (loss, info), grad in values_and_grads(latents)[1:]:
        assert float(info['winner_weight']) == 1.0
        np.testing.assert_allclose(loss, reference, rtol=1e-6)
        np.testing.assert_allclose(grad, reference_grad, rtol=1e-5, atol=1e-7)
        for metric, value in reference_info.items():
            np.testing.assert_allclose(info[metric], value, rtol=1e-5, err_msg=metric)


# ---------------------------------------------------------------------------------------------
# Soft and annealed routing.


def test_temperature_falls_tenfold_per_decade_towards_its_final_value():
    values = [float(soft.temperature_at(t, 0.5, 0.01, 1000)) for t in (0, 1000, 2000, 10**6)]
    np.testing.assert_allclose(values, [0.5, 0.01 + 0.049, 0.01 + 0.0049, 0.01], rtol=1e-5)
    assert float(soft.temperature_at(123, 0.0, 0.0, 1000)) == 0.0


def test_softmin_and_epsilon_responsibilities():
    distances = jnp.array([[0.3, 0.1, 0.2], [0.0, 0.5, 0.5]])
    expected = np.exp(-np.asarray(distances) / 0.1)
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(soft.softmin_responsibilities(distances, 0.1), expected, rtol=1e-5)
    np.testing.assert_array_equal(
        soft.softmin_responsibilities(distances, 0.0), [[0, 1, 0], [1, 0, 0]]
    )
    np.testing.assert_allclose(
        soft.epsilon_responsibilities(distances, 0.2), [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1]]
    )
    np.testing.assert_array_equal(soft.epsilon_responsibilities(distances[:, :1], 0.2), [[1], [1]])


def test_soft_loss_pulls_and_pushes_every_candidate_by_its_weight():
    """Identity policy: candidate k's gradient is w_k (2 (c_k - a) / (N d) - q_coef dq_k/N / m)."""
    latents, actions, weights = random_inputs()
    n, _, d = latents.shape
    temperature = 0.05
    loss = jax.jit(
        jax.grad(
            lambda z: soft.soft_routed_actor_loss(
                lambda x: x,
                linear_q(weights),
                z,
                actions,
                lambda dist: soft.softmin_responsibilities(dist, temperature),
                **identity_loss_settings(),
            )[0]
        )
    )
    grads = np.asarray(loss(latents))
    z, a, w = np.asarray(latents), np.asarray(actions), np.asarray(weights)
    resp = np.exp(-np.mean((z - a[:, None]) ** 2, -1) / temperature)
    resp /= resp.sum(-1, keepdims=True)
    q1, q2 = z @ w, z @ w + 0.1 * z[..., 0]
    q_state = (resp * np.minimum(q1, q2)).sum(-1)
    dq = np.where((q1 <= q2)[..., None], w, w + np.array([0.1, 0, 0]))
    expected = resp[..., None] * (
        2 * (z - a[:, None]) / (n * d) - dq / (n * np.abs(q_state).mean())
    )
    np.testing.assert_allclose(grads, expected, rtol=1e-4, atol=1e-6)
    assert np.all(np.abs(grads) > 0)  # Every candidate learns, not only the winner.


# ---------------------------------------------------------------------------------------------
# Learned routing score and metric.


def test_score_cross_entropy_and_accuracy():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    loss, accuracy = score.score_cross_entropy(logits, jnp.array([0, 1]))
    expected = -np.mean([jax.nn.log_softmax(logits[0])[0], jax.nn.log_softmax(logits[1])[1]])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(accuracy) == 0.5


def test_metric_fit_is_the_residual_variance_and_reweights_routing():
    residuals = jnp.array([[0.1, 1.0], [-0.3, -2.0]])
    best = jnp.log(jnp.mean(residuals**2, axis=0))
    gradient = jax.grad(lambda v: score.metric_fit_loss(residuals, v))(best)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-6)
    # Dimension 2 is noisy (variance 100): a candidate 0.5 off in it beats one 0.3 off in dim 1.
    candidates = jnp.array([[[0.3, 0.0], [0.0, 0.5]]])
    actions = jnp.zeros((1, 2))
    assert int(drol.route_to_nearest(drol.candidate_distances(candidates, actions))[0]) == 0
    metric = score.metric_distances(candidates, actions, jnp.log(jnp.array([1.0, 100.0])))
    assert int(drol.route_to_nearest(metric)[0]) == 1


def test_score_inference_is_drols_at_beta_zero_and_adds_beta_log_score_otherwise():
    drol_agent = tiny_agent(DROL_PATH).agent
    variant = variant_on_drol_parameters('score')
    observations = bootstrapping_batch(32)['observations'][:6]
    filtered = dict(inference_best_of_n=True, inference_num_samples=8)
    filtered.update(inference_use_density_filter=True, inference_dense_topk=3)
    cases = [  # (variant's options, DROL's options or None)
        ({}, {}),  # The single pass.
        (filtered, filtered),  # beta = 0: DROL's best-of-N with its density filter.
        ({**filtered, 'score_beta': 0.5, 'inference_use_density_filter': False}, None),
        ({**filtered, 'score_beta': 50.0}, None),
    ]

    @jax.jit
    def actions_and_parts(key):
        outputs = [
            (
                with_config(variant, **ours).sample_actions(observations, seed=key),
                None
                if theirs is None
                else with_config(drol_agent, **theirs).sample_actions(observations, seed=key),
            )
            for ours, theirs in cases
        ]
        # What ranking the candidates needs, computed here from the agent's parts.
        latents = drol.sample_ball_prior(key, (6, 8), 2)
        tiled = jnp.repeat(observations[:, None], 8, axis=1)
        candidates = variant.policy(tiled, latents)
        q = variant.network.select('critic')(tiled, candidates).mean(axis=0)
        log_score = jax.nn.log_softmax(variant.scores(observations, latents), axis=-1)
        return outputs, candidates, q, log_score, drol.densest(candidates, 3)

    outputs, candidates, q, log_score, dense = actions_and_parts(jax.random.PRNGKey(2))
    for ours, theirs in outputs[:2]:
        np.testing.assert_array_equal(ours, theirs)
    expected = candidates[jnp.arange(6), jnp.argmax(q + 0.5 * log_score, axis=-1)]
    np.testing.assert_allclose(outputs[2][0], expected, atol=1e-6)
    # beta 50: the score dominates, but only among the candidates DROL's filter keeps.
    kept = np.any(np.all(np.asarray(candidates)[:, :, None] == np.asarray(dense)[:, None], -1), -1)
    rank = np.where(kept, np.asarray(q + 50.0 * log_score), -np.inf)
    expected = np.asarray(candidates)[np.arange(6), np.argmax(rank, axis=-1)]
    np.testing.assert_allclose(outputs[3][0], expected, atol=1e-6)
    assert not np.allclose(outputs[2][0], outputs[0][0])  # Best-of-N is not the single pass.


# ---------------------------------------------------------------------------------------------
# Adaptive candidate budget.


def test_budget_stops_at_the_first_covering_candidate():
    distances = jnp.array(
        [[0.5, 0.01, 0.002, 0.0001], [0.5, 0.4, 0.3, 0.2], [0.001, 0.3, 0.0, 0.1]]
    )
    np.testing.assert_array_equal(budget.coverage_budget(distances, 0.005, 1), [3, 4, 1])
    np.testing.assert_array_equal(budget.coverage_budget(distances, 0.005, 2), [3, 4, 2])
    budgets = budget.coverage_budget(distances, 0.005, 1)
    # State 0 stops at candidate 2 (within eps) although candidate 3 is nearer.
    np.testing.assert_array_equal(budget.route_within_budget(distances, budgets), [2, 3, 0])


def test_budget_loss_reports_the_share_of_candidates_used():
    latents, actions, weights = random_inputs(n=8, k=4)
    latents = latents.at[:4, 1].set(actions[:4])  # States 0-3: candidate 1 is exact.
    loss = jax.jit(
        lambda z: budget.budget_actor_loss(
            lambda x: x,
            linear_q(weights),
            z,
            actions,
            coverage_epsilon=1e-6,
            min_candidates=1,
            **identity_loss_settings(),
        )
    )
    _, info = loss(latents)
    distances = np.mean((np.asarray(latents) - np.asarray(actions)[:, None]) ** 2, -1)
    assert distances[4:].min() > 1e-6 and distances[:4, 0].min() > 1e-6
    # States 0-3 use 2 of 4 candidates, states 4-7 all 4: 24 of 32.
    np.testing.assert_allclose(info['candidates_used'], 0.75, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Region-level support.


def test_support_penalty_pulls_only_candidates_outside_the_support():
    observations = jnp.zeros((4, 2))
    actions = jnp.array([[0.5, 0.5], [0.52, 0.5], [-0.5, -0.5], [-0.52, -0.5]])
    inside = actions[:, None, :] + 0.001
    gap = jnp.full((4, 1, 2), 0.1)
    candidates = jnp.concatenate([inside, gap], axis=1)  # (4, 2, 2): one in, one in the gap.
    penalty = jax.jit(
        jax.grad(
            lambda c: support.support_penalty(
                c, observations, actions, state_weight=1.0, margin=1.0
            ),
            has_aux=True,
        )
    )
    grads, info = penalty(candidates)
    grads = np.asarray(grads)
    # The data's own nearest-neighbour distance: 0.02^2 / 2 for every action.
    np.testing.assert_allclose(info['support_threshold'], 0.0002, rtol=1e-3)
    assert np.all(grads[:, 0] == 0) and np.all(np.abs(grads[:, 1]) > 0)
    assert float(info['outside_support']) == 0.5
    # The gap candidate (0.1, 0.1) is pulled towards its nearest dataset action (0.5, 0.5).
    assert np.all(-grads[:, 1] > 0)


def test_support_state_weight_makes_the_support_state_dependent():
    # Two states, each with two close dataset actions; each state's candidate sits on the other
    # state's actions.
    actions = jnp.array([[0.5], [0.51], [-0.5], [-0.51]])
    candidates = jnp.array([[[-0.5]], [[-0.5]], [[0.5]], [[0.5]]])
    near, far = jnp.zeros((4, 1)), jnp.array([[-1.0], [-1.0], [1.0], [1.0]])
    penalty = jax.jit(
        lambda obs, w: support.support_penalty(
            candidates, obs, actions, state_weight=w, margin=0.5
        )[0]
    )
    assert float(penalty(near, 1.0)) == 0.0  # Same state: the other action is in its support.
    assert float(penalty(far, 0.0)) == 0.0  # State ignored: any dataset action is support.
    assert float(penalty(far, 1.0)) > 0.0  # Distant states: not in this state's support.


# ---------------------------------------------------------------------------------------------
# Conventions.


@pytest.mark.parametrize('name', list(VARIANT_PATHS))
def test_variant_conventions(name):
    file = agent_file(VARIANT_PATHS[name])
    config = file.default_config()
    assert config.agent_name == f'drol_{name}'
    assert file.agent_class.__name__.startswith('DROL') and file.agent_class is not drol.DROLAgent
    check_agent_config(config, file.hyperparameter_checks)
    assert set(drol.HYPERPARAMETER_CHECKS) <= set(file.hyperparameter_checks)
    assert set(file.hyperparameter_checks) <= set(config)
    # DROL's published settings apply, under the variant's own labels.
    assert file.published_settings == drol.PUBLISHED_SETTINGS
    assert set(file.preset_labels) == set(drol.PRESET_LABELS)
    assert not set(file.preset_labels.values()) & set(drol.PRESET_LABELS.values())
    # Every progress metric exists in the (traced) total loss at the defaults.
    agent = variant_on_drol_parameters(name, reduced=False)
    info = jax.eval_shape(
        lambda a, b: a.total_loss(b, a.network.params)[1], agent, bootstrapping_batch(32)
    )
    assert set(file.progress_metrics) <= set(info)


def test_the_library_names_none_of_the_variants():
    pattern = re.compile(r'drol_(soft|score|budget|support)')
    for file in Path(REPO, 'drol_jax').rglob('*.py'):
        assert not pattern.search(file.read_text()), file


# ---------------------------------------------------------------------------------------------
# Through main.py.

MAIN_RUNS = {
    'soft': ('--agent.temperature_decade_steps=50', 'temperature'),
    'score': ('--agent.inference_best_of_n=True', 'score_accuracy'),
    'budget': ('--agent.coverage_epsilon=0.01', 'candidates_used'),
    'support': ('--agent.support_coef=2.0', 'outside_support'),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(MAIN_RUNS))
def test_variant_trains_through_main(name, tmp_path):
    flag, metric = MAIN_RUNS[name]
    result = run_main(
        f'--agent={VARIANT_PATHS[name]}',
        '--env_name=toy-multimodal',
        '--offline_steps=100',
        '--log_interval=50',
        '--eval_interval=100',
        '--save_interval=100',
        '--eval_episodes=5',
        flag,
        f'--save_dir={tmp_path}',
        '--run_group=v',
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'v' / 'toy-multimodal' / f'drol_{name}' / 'seed0'
    header, rows = read_csv_rows(run_dir / 'train.csv')
    assert [r.split(',')[0] for r in rows] == ['50', '100']
    column = header.index(f'training/actor/{metric}')
    values = [float(r.split(',')[column]) for r in rows]
    assert all(np.isfinite(values)), values
    if name == 'soft':  # The schedule follows the agent's step: 0.1 * 10**(-50/50) at step 50.
        np.testing.assert_allclose(values, [0.1 * 10**-0.98, 0.1 * 10**-1.98], rtol=1e-4)
    flags = json.loads((run_dir / 'flags.json').read_text())
    assert flags['agent']['agent_name'] == f'drol_{name}'
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['complete'] and summary['final_eval']['step'] == 100


@pytest.mark.slow
def test_a_bad_variant_hyperparameter_is_its_own_one_line_error(tmp_path):
    result = run_main(
        f'--agent={VARIANT_PATHS["soft"]}',
        '--env_name=toy-multimodal',
        '--agent.responsibility=hard',
        f'--save_dir={tmp_path}',
    )
    assert one_line_error(result) == (
        "error: --agent.responsibility must be 'softmin' or 'epsilon', got 'hard'."
    )


# ---------------------------------------------------------------------------------------------
# The mechanism benchmark (python -m drol_jax.analysis variants).


def test_benchmark_agent_specs_take_python_literals_tuples_included():
    spec = benchmark.parse_agent(
        'agents/drol_score.py:inference_best_of_n=True,score_hidden_dims=(64, 64),x=a'
    )
    assert spec.path == 'agents/drol_score.py'
    assert spec.overrides == {'inference_best_of_n': True, 'score_hidden_dims': (64, 64), 'x': 'a'}
    assert spec.label == 'drol_score inference_best_of_n=True score_hidden_dims=(64, 64) x=a'
    assert benchmark.parse_agent('agents/drol.py') == benchmark.AgentSpec('agents/drol.py', {})
    with pytest.raises(
        ConfigError, match="'bc_coef' in 'agents/drol.py:bc_coef' is not name=value"
    ):
        benchmark.parse_agent('agents/drol.py:bc_coef')


def test_benchmark_mode_metrics_of_known_draws():
    task_name = benchmark.common.TASK_NAME
    task = benchmark.TASKS[task_name]
    states = task.make_dataset(64, benchmark.HELD_OUT_SEED)['observations']
    centres = task.mode_centers(states)  # (S, modes, d); mode 0 is the best.
    on_best = benchmark.mode_metrics(task_name, states, centres[:, :1].repeat(4, axis=1))
    assert on_best == {'coverage': 1 / 3, 'smallest_share': 0.0, 'off_support': 0.0, 'success': 1.0}
    off = benchmark.mode_metrics(task_name, states, np.full((64, 4, 2), 5.0))
    assert off['coverage'] == 0.0 and off['off_support'] == 1.0 and off['success'] == 0.0
    data = benchmark.mode_metrics(
        task_name, states, benchmark.data_draws(task_name, states, 300, seed=0)
    )
    assert data['coverage'] == 1.0 and 0.2 < data['smallest_share'] < 1 / 3
    assert data['off_support'] < 0.05


def test_benchmark_reads_the_last_logged_metrics(tmp_path):
    (tmp_path / 'train.csv').write_text('step,training/actor/q,other\n1,0.5,2\n2,0.25,\n')
    values = benchmark.last_logged(str(tmp_path), {'Q': 'training/actor/q', 'x': 'other'})
    assert values['Q'] == 0.25 and np.isnan(values['x'])


def test_benchmark_table_marks_agents_whose_ogbench_runs_are_not_done():
    stat = benchmark.estimate([0.5, 0.7])
    curves = {name: {k: [stat[k]] for k in ('mean', 'low', 'high')} for name in benchmark.CURVES}
    toy = {'final': {m: stat for m in benchmark.TOY_METRICS}, 'curves': curves}
    runs = {
        'success': stat,
        'return': stat,
        'training': {m: stat for m in benchmark.OGBENCH_METRICS},
    }
    result = {
        'settings': {'ogbench_env': 'cube-single'},
        'agents': ['drol', 'drol_soft'],
        'toy_reference': {m: 0.5 for m in benchmark.TOY_METRICS},
        'toy': {'drol': toy, 'drol_soft': toy},
        'ogbench': {'drol': runs},
    }
    lines = benchmark.table_lines(result)
    assert lines[3].startswith('| drol | 60.0 [50.0, 70.0] |')
    ogbench = lines[lines.index('') + 1 :]
    assert 'cube-single success (%)' in ogbench[0]
    assert ogbench[2].startswith('| drol | 60.0 [50.0, 70.0] | 0.6 [0.5, 0.7] |')
    assert ogbench[3] == '| drol_soft |' + ' - |' * (len(benchmark.OGBENCH_METRICS) + 2)


@pytest.mark.slow
def test_benchmark_writes_its_table_json_and_figure(tmp_path):
    agents = [DROL_PATH, f'{VARIANT_PATHS["budget"]}:coverage_epsilon=0.01,min_candidates=2']
    done = subprocess.run(
        [sys.executable, '-m', 'drol_jax.analysis', 'variants', f'--out_dir={tmp_path}']
        + ['--agents', *agents, '--seeds=2', '--steps=20', '--curve_points=2', '--hidden', '16']
        + ['--batch_size=32', '--eval_states=8', '--eval_draws=4'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / 'variants.json').read_text())
    labels = ['drol', 'drol_budget coverage_epsilon=0.01 min_candidates=2']
    assert result['agents'] == labels and result['ogbench'] == {}
    for label in labels:
        toy = result['toy'][label]
        assert toy['steps'] == [10, 20]
        assert len(toy['final']['coverage']['per_seed']) == 2
        assert np.asarray(toy['curves']['winner entropy']['per_seed']).shape == (2, 2)
    table = (tmp_path / 'variants.md').read_text()
    assert 'Toy: toy-multimodal, 2 seeds (0..1), 20 updates' in table
    assert 'OGBench: not run' in table
    assert all(f'| {label} |' in table for label in labels)
    assert (tmp_path / 'variants.png').read_bytes().startswith(b'\x89PNG')
