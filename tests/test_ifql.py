"""IFQL (issue 16): official config and parameter layout both ways, losses and gradients against
the published equations (IQL's value and critics, flow-matching BC), and best-of-N inference with
the official seed handling, on one observation and on a batch."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
from helpers import (
    OFFICIAL_SHARED_CONFIG,
    REPO,
    TINY_HIDDEN,
    agent_file,
    bootstrapping_batch,
    check_official_layout_both_ways,
    check_official_target_lag,
    first_update_gradient,
    mlp_layout,
    reference_critic,
    reference_mlp,
    tiny_agent,
    toy_dataset,
)

IFQL = os.path.join(REPO, 'agents', 'ifql.py')
OBS_DIM = ACTION_DIM = 2

# The official agents/ifql.py get_config(): its `action_dim` placeholder is set from the data
# (here too, in the agent's config); `encoder` is None (state inputs).
OFFICIAL_CONFIG = dict(
    agent_name='ifql',
    **OFFICIAL_SHARED_CONFIG,
    expectile=0.9,
    num_samples=32,
    flow_steps=10,
    encoder=None,
)


def official_layout(hidden=TINY_HIDDEN):
    critic = [OBS_DIM + ACTION_DIM, *hidden, 1]
    return {
        **mlp_layout('modules_value/value_net', [OBS_DIM, *hidden, 1], layer_norm=True),
        **mlp_layout('modules_critic/value_net', critic, layer_norm=True, ensemble=2),
        **mlp_layout('modules_target_critic/value_net', critic, layer_norm=True, ensemble=2),
        **mlp_layout('modules_actor_flow/mlp', [OBS_DIM + ACTION_DIM + 1, *hidden, ACTION_DIM]),
    }


def test_config_is_the_official_one():
    assert agent_file(IFQL).default_config().to_dict() == OFFICIAL_CONFIG
    assert tiny_agent(IFQL).agent.config['action_dim'] == ACTION_DIM


def reference_best_of_n(params, observation, noises, flow_steps):
    """The official IFQL inference for one observation from its ``(N, d)`` initial noises.

    Euler steps ``x += v(s, x, i / steps) / steps``, clip to [-1, 1], keep the argmax of the
    critics' min Q.
    """
    states = jnp.repeat(observation[None], noises.shape[0], axis=0)
    x = noises
    for i in range(flow_steps):
        t = jnp.full((noises.shape[0], 1), i / flow_steps)
        inputs = jnp.concatenate([states, x, t], axis=-1)
        x = x + reference_mlp(params['modules_actor_flow']['mlp'], inputs) / flow_steps
    x = jnp.clip(x, -1, 1)
    q = reference_critic(params['modules_critic'], states, x).min(0)
    return x[jnp.argmax(q)], q


def test_official_parameters_both_ways_and_best_of_n_inference(tmp_path):
    restored, params = check_official_layout_both_ways(IFQL, official_layout(), tmp_path)
    config = restored.config
    observations = toy_dataset()['observations'][:5]
    seed = jax.random.PRNGKey(4)
    noise_seed, _ = jax.random.split(seed)  # The official split: the first key draws the noise.

    @jax.jit
    def expected(params):
        # One observation, as the official agent takes it (and as vectorised evaluation vmaps
        # it), and a batch, each observation with its own row of the batch's noise.
        steps, num = config['flow_steps'], config['num_samples']
        noises = jax.random.normal(noise_seed, (num, ACTION_DIM))
        single = reference_best_of_n(params, observations[0], noises, steps)
        noises = jax.random.normal(noise_seed, (len(observations), num, ACTION_DIM))
        batched = jax.vmap(lambda o, n: reference_best_of_n(params, o, n, steps)[0])
        return single, batched(observations, noises)

    (expected_single, q), expected_batch = expected(params)
    assert len(np.unique(np.round(np.asarray(q), 4))) > 1  # The Q ranking decides.
    single = restored.sample_actions(observations[0], seed=seed, temperature=0.0)
    np.testing.assert_allclose(single, expected_single, rtol=1e-5, atol=1e-6)
    batched = restored.sample_actions(observations, seed=seed)
    np.testing.assert_allclose(batched, expected_batch, rtol=1e-5, atol=1e-6)


def reference_losses(params, batch, rng, config):
    """IFQL's losses: IQL's value and critics, and flow matching (Lipman et al. 2023)."""
    sg = jax.lax.stop_gradient
    s, a = batch['observations'], batch['actions']

    def value(x):
        return reference_mlp(params['modules_value']['value_net'], x, layer_norm=True)[..., 0]

    diff = sg(reference_critic(params['modules_target_critic'], s, a).min(0)) - value(s)
    value_loss = jnp.mean(
        jnp.where(diff >= 0, config['expectile'], 1 - config['expectile']) * diff**2
    )
    target = batch['rewards'] + config['discount'] * batch['masks'] * sg(
        value(batch['next_observations'])
    )
    critic_loss = jnp.mean(
        ((reference_critic(params['modules_critic'], s, a) - target) ** 2).sum(0)
    )
    # Flow matching on the straight path x_t = (1 - t) x_0 + t a, velocity a - x_0.
    _, actor_rng = jax.random.split(rng)
    _, noise_rng, time_rng = jax.random.split(actor_rng, 3)
    x_0 = jax.random.normal(noise_rng, a.shape)
    t = jax.random.uniform(time_rng, (a.shape[0], 1))
    x_t = (1 - t) * x_0 + t * a
    velocity = reference_mlp(params['modules_actor_flow']['mlp'], jnp.concatenate([s, x_t, t], -1))
    flow_loss = jnp.mean((velocity - (a - x_0)) ** 2)
    parts = {'value': value_loss, 'critic': critic_loss, 'actor': flow_loss}
    return value_loss + critic_loss + flow_loss, parts


def test_losses_and_gradients_match_the_equations():
    # The agent's first update (the program the other tests compile) against the equations:
    # each loss by its logged value, the gradient of their sum from Adam's first moment.
    agent = tiny_agent(IFQL).agent
    batch = bootstrapping_batch(32, seed=6)
    rng = jax.random.split(agent.rng)[1]  # The key the update gives its losses.
    updated, info = agent.update(batch)
    (_, parts), ref_grads = jax.jit(
        jax.value_and_grad(lambda p: reference_losses(p, batch, rng, agent.config), has_aux=True)
    )(agent.network.params)
    np.testing.assert_allclose(info['value/value_loss'], parts['value'], rtol=1e-5)
    np.testing.assert_allclose(info['critic/critic_loss'], parts['critic'], rtol=1e-5)
    np.testing.assert_allclose(info['actor/actor_loss'], parts['actor'], rtol=1e-5)
    chex.assert_trees_all_close(first_update_gradient(updated), ref_grads, rtol=1e-4, atol=1e-6)


def test_the_target_critic_follows_the_official_update():
    agent = tiny_agent(IFQL).agent
    for seed in range(2):
        agent = check_official_target_lag(agent, bootstrapping_batch(32, seed))
