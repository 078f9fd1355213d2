"""IQL (issue 16): official config and parameter layout both ways, losses and gradients against
the published equations (expectile weight, AWR's clipped exponent, DDPG+BC), mean action at
temperature 0."""

import os
import re
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    OFFICIAL_SHARED_CONFIG,
    REPO,
    TINY_HIDDEN,
    agent_file,
    bootstrapping_batch,
    check_official_layout_both_ways,
    check_official_target_lag,
    create_agent,
    first_update_gradient,
    gaussian_log_prob,
    mlp_layout,
    params_shapes,
    reference_critic,
    reference_gaussian,
    reference_mlp,
    small_config,
    tiny_agent,
    toy_dataset,
    with_config,
)

IQL = os.path.join(REPO, 'agents', 'iql.py')
OBS_DIM = ACTION_DIM = 2

# The official agents/iql.py get_config() (`encoder`: None, state inputs).
OFFICIAL_CONFIG = dict(
    agent_name='iql',
    **OFFICIAL_SHARED_CONFIG,
    expectile=0.9,
    actor_loss='awr',
    alpha=10.0,
    const_std=True,
    encoder=None,
)


def official_layout(hidden=TINY_HIDDEN):
    critic = [OBS_DIM + ACTION_DIM, *hidden, 1]
    return {
        **mlp_layout('modules_value/value_net', [OBS_DIM, *hidden, 1], layer_norm=True),
        **mlp_layout('modules_critic/value_net', critic, layer_norm=True, ensemble=2),
        **mlp_layout('modules_target_critic/value_net', critic, layer_norm=True, ensemble=2),
        **mlp_layout('modules_actor/actor_net', [OBS_DIM, *hidden], activate_final=True),
        'modules_actor/mean_net/kernel': (hidden[-1], ACTION_DIM),
        'modules_actor/mean_net/bias': (ACTION_DIM,),
    }


def test_the_library_names_none_of_the_panel_agents():
    pattern = re.compile(r'\b(iql|rebrac|ifql|sac|rlpd)\b', re.IGNORECASE)
    for file in Path(REPO, 'drol_jax').rglob('*.py'):
        assert not pattern.search(file.read_text()), file


def test_config_is_the_official_one():
    assert agent_file(IQL).default_config().to_dict() == OFFICIAL_CONFIG


def test_official_parameters_both_ways_and_the_mean_action_at_temperature_zero(tmp_path):
    restored, params = check_official_layout_both_ways(IQL, official_layout(), tmp_path)
    # The observations of the generic temperature test: the same compiled sample_actions.
    observations = toy_dataset()['observations'][:5]
    mean, _ = reference_gaussian(params['modules_actor'], observations)
    for k in range(2):
        cold = restored.sample_actions(observations, seed=jax.random.PRNGKey(k), temperature=0.0)
        np.testing.assert_allclose(cold, np.clip(mean, -1, 1), rtol=1e-5, atol=1e-6)
    # Temperature 1 samples around the mean with the constant std of 1.
    warm = restored.sample_actions(observations, seed=jax.random.PRNGKey(0), temperature=1.0)
    assert np.abs(np.asarray(warm) - np.clip(mean, -1, 1)).max() > 0.1


def reference_losses(params, batch, rng, config):
    """IQL's losses from the equations (Kostrikov et al. 2022; DDPG+BC of the FQL codebase)."""
    sg = jax.lax.stop_gradient
    s, a = batch['observations'], batch['actions']

    def value(x):
        return reference_mlp(params['modules_value']['value_net'], x, layer_norm=True)[..., 0]

    # Value: expectile regression on the min of the target critics at the dataset action.
    diff = sg(reference_critic(params['modules_target_critic'], s, a).min(0)) - value(s)
    weight = jnp.abs(config['expectile'] - (diff < 0))
    value_loss = jnp.mean(weight * diff**2)
    # Critics: r + gamma * mask * V(s'), squared errors summed over the two critics.
    target = batch['rewards'] + config['discount'] * batch['masks'] * sg(
        value(batch['next_observations'])
    )
    q = reference_critic(params['modules_critic'], s, a)
    critic_loss = jnp.mean(((q - target) ** 2).sum(0))
    # Actor.
    mean, log_std = reference_gaussian(params['modules_actor'], s)
    log_prob = gaussian_log_prob(a, mean, log_std)
    if config['actor_loss'] == 'awr':
        advantage = sg(q.min(0) - value(s))
        weights = jnp.minimum(jnp.exp(config['alpha'] * advantage), 100.0)
        actor_loss = -jnp.mean(weights * log_prob)
        extras = {'weights': weights, 'diff': diff}
    else:  # DDPG+BC: Q at the mode (constant std) or at a sample of the actor's second key.
        if not config['const_std']:
            _, actor_rng = jax.random.split(rng)
            mean = mean + jnp.exp(log_std) * jax.random.normal(actor_rng, mean.shape)
        q_pi = reference_critic(sg(params['modules_critic']), s, jnp.clip(mean, -1, 1)).min(0)
        actor_loss = -q_pi.mean() / sg(jnp.abs(q_pi).mean()) - config['alpha'] * log_prob.mean()
        extras = {'diff': diff}
    losses = {'value': value_loss, 'critic': critic_loss, 'actor': actor_loss}
    return value_loss + critic_loss + actor_loss, (losses, extras)


def check_against_reference(agent, batch):
    """The agent's first update on ``batch`` against the equations: each loss by its logged
    value, the gradient (read from Adam's first moment) of their sum."""
    updated, info = agent.update(batch)
    rng = jax.random.split(agent.rng)[1]  # The key the update gives its losses.
    (_, (ref_parts, extras)), ref_grads = jax.jit(
        jax.value_and_grad(lambda p: reference_losses(p, batch, rng, agent.config), has_aux=True)
    )(agent.network.params)
    for name, value in ref_parts.items():
        key = {'value': 'value/value_loss', 'critic': 'critic/critic_loss'}.get(name)
        np.testing.assert_allclose(info[key or 'actor/actor_loss'], value, rtol=1e-5)
    grads = first_update_gradient(updated)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-4, atol=1e-6)
    # Only the value, the critic and the actor learn; the target critic gets no gradient.
    assert not any(np.any(g) for g in jax.tree_util.tree_leaves(grads['modules_target_critic']))
    return extras


def test_awr_losses_and_gradients_match_the_equations():
    # The default config (its update program is the one the other tests compile); at the
    # initial parameters part of the batch already has exp(10 * adv) above AWR's clip at 100.
    agent = tiny_agent(IQL).agent
    extras = check_against_reference(agent, bootstrapping_batch(32, seed=3))
    assert np.any(extras['weights'] == 100.0) and np.any(extras['weights'] < 100.0)
    # Both sides of the expectile: the weight 0.9 above the value and 0.1 below are both used.
    assert np.any(extras['diff'] > 0) and np.any(extras['diff'] < 0)


def test_ddpgbc_losses_and_gradients_match_the_equations():
    agent = with_config(tiny_agent(IQL).agent, actor_loss='ddpgbc', alpha=2.0)
    check_against_reference(agent, bootstrapping_batch(32, seed=3))


def test_the_target_critic_follows_the_official_update():
    agent = tiny_agent(IQL).agent
    for seed in range(2):
        agent = check_official_target_lag(agent, bootstrapping_batch(32, seed))


@pytest.mark.slow
def test_ddpgbc_with_a_learned_std_matches_the_equations():
    config = small_config(agent_file(IQL).default_config(), actor_loss='ddpgbc', const_std=False)
    agent = create_agent(IQL, config)
    layout = official_layout()
    layout['modules_actor/log_stds'] = (ACTION_DIM,)  # A learned vector, not a head.
    assert params_shapes(agent.network.params) == layout
    check_against_reference(agent, bootstrapping_batch(32, seed=3))
