"""SAC / RLPD (issue 16): official config and parameter layout both ways, losses and gradients
against the published equations (the tanh log-density correction, the dual alpha loss, the
entropy backup), the mean action at temperature 0, and RLPD online through main.py."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    OFFICIAL_SHARED_CONFIG,
    REPO,
    TINY,
    TINY_HIDDEN,
    agent_file,
    bootstrapping_batch,
    check_official_layout_both_ways,
    check_official_target_lag,
    first_update_gradient,
    gaussian_log_prob,
    mlp_layout,
    read_csv_rows,
    reference_critic,
    reference_gaussian,
    run_main,
    tiny_agent,
    toy_dataset,
    with_config,
)

SAC = os.path.join(REPO, 'agents', 'sac.py')
OBS_DIM = ACTION_DIM = 2

# The official agents/sac.py get_config().
OFFICIAL_CONFIG = dict(
    agent_name='sac',
    **OFFICIAL_SHARED_CONFIG,
    target_entropy=None,
    target_entropy_multiplier=0.5,
    tanh_squash=True,
    state_dependent_std=True,
    actor_fc_scale=0.01,
    q_agg='min',
    backup_entropy=False,
    # Not in the official SAC (it has no image encoder): here only to refuse one clearly.
    encoder=None,
)


def official_layout(hidden=TINY_HIDDEN):
    critic = [OBS_DIM + ACTION_DIM, *hidden, 1]
    layout = {}
    for prefix in ('modules_critic', 'modules_target_critic'):
        layout |= mlp_layout(f'{prefix}/value_net', critic, layer_norm=True, ensemble=2)
    layout |= mlp_layout('modules_actor/actor_net', [OBS_DIM, *hidden], activate_final=True)
    for head in ('mean_net', 'log_std_net'):
        layout[f'modules_actor/{head}/kernel'] = (hidden[-1], ACTION_DIM)
        layout[f'modules_actor/{head}/bias'] = (ACTION_DIM,)
    layout['modules_alpha/log_value'] = ()
    return layout


def test_config_is_the_official_one_and_the_entropy_target_resolves():
    assert agent_file(SAC).default_config().to_dict() == OFFICIAL_CONFIG
    agent = tiny_agent(SAC).agent
    assert agent.config['target_entropy'] == -0.5 * ACTION_DIM
    assert tiny_agent(SAC).config.target_entropy is None  # The user's config is not changed.


def test_official_parameters_both_ways_and_the_mean_action_at_temperature_zero(tmp_path):
    restored, params = check_official_layout_both_ways(SAC, official_layout(), tmp_path)
    # The observations of the generic temperature test: the same compiled sample_actions.
    observations = toy_dataset()['observations'][:5]
    mean, log_std = reference_gaussian(params['modules_actor'], observations)
    for k in range(2):
        cold = restored.sample_actions(observations, seed=jax.random.PRNGKey(k), temperature=0.0)
        np.testing.assert_allclose(cold, np.tanh(mean), rtol=1e-5, atol=1e-6)
    # Temperature 1: tanh of a reparameterised sample, mean + std * eps.
    key = jax.random.PRNGKey(0)
    eps = jax.random.normal(key, mean.shape)
    warm = restored.sample_actions(observations, seed=key, temperature=1.0)
    np.testing.assert_allclose(warm, np.tanh(mean + np.exp(log_std) * eps), rtol=1e-5, atol=1e-5)


def tanh_gaussian_sample(params, observations, key):
    """``a = tanh(u)``, ``u = mean + std * eps``, and ``log pi(a|s)`` with tanh's Jacobian.

    ``log(1 - tanh(u)^2)`` is written as ``2 (log 2 - u - softplus(-2u))`` (the same function),
    which float32 keeps accurate where ``tanh(u)`` rounds to 1.
    """
    mean, log_std = reference_gaussian(params, observations)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    log_det = 2 * (jnp.log(2.0) - u - jax.nn.softplus(-2 * u))
    return jnp.tanh(u), gaussian_log_prob(u, mean, log_std) - jnp.sum(log_det, -1)


def reference_losses(params, batch, rng, config):
    """SAC's losses from the equations (Haarnoja et al. 2018; the FQL codebase's keys)."""
    sg = jax.lax.stop_gradient
    s, a, s_next = batch['observations'], batch['actions'], batch['next_observations']
    _, actor_rng, critic_rng = jax.random.split(rng, 3)
    _, sample_rng = jax.random.split(critic_rng)
    alpha = jnp.exp(params['modules_alpha']['log_value'])
    # Critic: the current actor at s', the min of the target critics, optional entropy backup.
    next_a, next_log_prob = tanh_gaussian_sample(sg(params['modules_actor']), s_next, sample_rng)
    next_v = reference_critic(params['modules_target_critic'], s_next, next_a).min(0)
    if config['backup_entropy']:
        next_v = next_v - sg(alpha) * next_log_prob
    target = sg(batch['rewards'] + config['discount'] * batch['masks'] * next_v)
    critic_loss = jnp.mean((reference_critic(params['modules_critic'], s, a) - target) ** 2)
    # Actor: alpha * log pi - mean of the critics, reparameterised through the sample.
    actions, log_prob = tanh_gaussian_sample(params['modules_actor'], s, actor_rng)
    q = reference_critic(sg(params['modules_critic']), s, actions).mean(0)
    actor_loss = jnp.mean(sg(alpha) * log_prob - q)
    # The dual variable: alpha * (entropy - target), the entropy held fixed.
    alpha_loss = alpha * (-sg(log_prob).mean() + 0.5 * ACTION_DIM)
    total = critic_loss + actor_loss + alpha_loss
    return total, {'critic': critic_loss, 'actor': actor_loss, 'alpha': alpha_loss}


# The entropy backup is off by default (and in RLPD): its variant compiles in the slow tier.
@pytest.mark.parametrize(
    'backup_entropy', [False, pytest.param(True, marks=pytest.mark.slow)], ids=['plain', 'backup']
)
def test_losses_and_gradients_match_the_equations(backup_entropy):
    agent = with_config(tiny_agent(SAC).agent, backup_entropy=backup_entropy)
    # alpha away from 1 and larger actor outputs, so every term of the objective matters.
    params = agent.network.params
    params = {**params, 'modules_alpha': {'log_value': jnp.float32(-0.7)}}
    actor = params['modules_actor']
    actor = {**actor, 'mean_net': jax.tree_util.tree_map(lambda x: 80 * x, actor['mean_net'])}
    params = {**params, 'modules_actor': actor}
    # The agent holds them too: its frozen terms (alpha in the policy loss) read its own state.
    agent = agent.replace(network=agent.network.replace(params=params))
    batch = bootstrapping_batch(32, seed=5)
    rng = jax.random.split(agent.rng)[1]  # The key the update gives its losses.

    # The agent's first update (the program the other tests compile) against the equations:
    # each loss by its logged value, the gradient of their sum from Adam's first moment.
    updated, info = agent.update(batch)
    (_, parts), ref_grads = jax.jit(
        jax.value_and_grad(lambda p: reference_losses(p, batch, rng, agent.config), has_aux=True)
    )(params)
    np.testing.assert_allclose(info['critic/critic_loss'], parts['critic'], rtol=1e-5)
    np.testing.assert_allclose(info['actor/actor_loss'], parts['actor'], rtol=1e-5)
    np.testing.assert_allclose(info['actor/alpha_loss'], parts['alpha'], rtol=1e-5)
    grads = first_update_gradient(updated)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(grads['modules_alpha']['log_value']) != 0)


@pytest.mark.slow
def test_rlpd_runs_online_through_main_with_balanced_sampling(tmp_path):
    # The official RLPD command's flags (FQL README), on the toy task with tiny networks.
    result = run_main(
        f'--agent={SAC}',
        '--env_name=toy-multimodal',
        '--offline_steps=0',
        '--online_steps=60',
        '--balanced_sampling=1',
        '--log_interval=20',
        '--eval_interval=30',
        '--eval_episodes=2',
        f'--save_dir={tmp_path}',
        '--run_group=rlpd',
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'rlpd' / 'toy-multimodal' / 'sac' / 'seed0'
    header, rows = read_csv_rows(run_dir / 'train.csv')
    assert [r.split(',')[0] for r in rows] == ['20', '40', '60']
    assert 'training/actor/alpha' in header and 'training/critic/critic_loss' in header
    _, rows = read_csv_rows(run_dir / 'eval.csv')
    assert [r.split(',')[0] for r in rows] == ['1', '30', '60']


def test_the_target_critic_follows_the_official_update():
    agent = tiny_agent(SAC).agent
    for seed in range(2):
        agent = check_official_target_lag(agent, bootstrapping_batch(32, seed))
