"""ReBRAC (issue 16): official config and parameter layout both ways, losses and gradients
against the published equations (the BC term in the critic's target and in the actor), the
official step rule of the actor and target updates inside fused blocks, and next actions as the
official dataset provides them."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    OFFICIAL_SHARED_CONFIG,
    REBRAC_BC_SETTINGS,
    REPO,
    TINY,
    TINY_HIDDEN,
    agent_file,
    bootstrapping_batch,
    check_official_layout_both_ways,
    check_official_target_lag,
    first_update_gradient,
    mlp_layout,
    read_csv_rows,
    reference_critic,
    reference_gaussian,
    run_main,
    tiny_agent,
    toy_dataset,
    with_config,
)

from drol_jax.data import ReplayBuffer, gather, random_transitions, sample_indices, to_device
from drol_jax.updates import make_train_block, stack_agents, unstack_agent

REBRAC = os.path.join(REPO, 'agents', 'rebrac.py')
OBS_DIM = ACTION_DIM = 2

# The official agents/rebrac.py get_config() (`encoder`: None, state inputs).
OFFICIAL_CONFIG = dict(
    agent_name='rebrac',
    **OFFICIAL_SHARED_CONFIG,
    tanh_squash=True,
    actor_fc_scale=0.01,
    alpha_actor=0.0,
    alpha_critic=0.0,
    actor_freq=2,
    actor_noise=0.2,
    actor_noise_clip=0.5,
    encoder=None,
)


def official_layout(hidden=TINY_HIDDEN):
    critic = [OBS_DIM + ACTION_DIM, *hidden, 1]
    layout = {}
    for prefix in ('modules_critic', 'modules_target_critic'):
        layout |= mlp_layout(f'{prefix}/value_net', critic, layer_norm=True, ensemble=2)
    for prefix in ('modules_actor', 'modules_target_actor'):
        layout |= mlp_layout(f'{prefix}/actor_net', [OBS_DIM, *hidden], activate_final=True)
        layout[f'{prefix}/mean_net/kernel'] = (hidden[-1], ACTION_DIM)
        layout[f'{prefix}/mean_net/bias'] = (ACTION_DIM,)
    return layout


def test_config_is_the_official_one():
    assert agent_file(REBRAC).default_config().to_dict() == OFFICIAL_CONFIG


def test_official_parameters_both_ways_and_the_deterministic_action(tmp_path):
    restored, params = check_official_layout_both_ways(REBRAC, official_layout(), tmp_path)
    # The observations of the generic temperature test: the same compiled sample_actions.
    observations = toy_dataset()['observations'][:5]
    mu = np.tanh(reference_gaussian(params['modules_actor'], observations)[0])
    for k in range(2):
        cold = restored.sample_actions(observations, seed=jax.random.PRNGKey(k), temperature=0.0)
        np.testing.assert_allclose(cold, mu, rtol=1e-5, atol=1e-6)
    # Temperature 1: the official exploration noise, N(0, 0.2^2) clipped at 0.5.
    key = jax.random.PRNGKey(0)
    noise = np.clip(0.2 * np.asarray(jax.random.normal(key, mu.shape)), -0.5, 0.5)
    warm = restored.sample_actions(observations, seed=key, temperature=1.0)
    np.testing.assert_allclose(warm, np.clip(mu + noise, -1, 1), rtol=1e-5, atol=1e-6)


def test_next_actions_are_the_next_index_clamped_at_the_end():
    dataset = random_transitions(10, OBS_DIM, ACTION_DIM, seed=1)
    indices = np.array([0, 4, 8, 9])
    for data, idx in ((dataset, indices), (to_device(dataset), jnp.asarray(indices))):
        batch = gather(data, idx)
        expected = dataset['actions'][[1, 5, 9, 9]]  # The last index has no next: clamped.
        np.testing.assert_array_equal(np.asarray(batch['next_actions']), expected)
    # An online buffer clamps at its filled size, not at its capacity.
    buffer = ReplayBuffer.from_dataset(dataset, capacity=20)
    batch = buffer.sample(np.random.default_rng(0), 64)
    indices = np.random.default_rng(0).integers(10, size=64)
    assert indices.max() == 9
    expected = dataset['actions'][np.minimum(indices + 1, 9)]
    np.testing.assert_array_equal(batch['next_actions'], expected)


def reference_losses(params, batch, rng, config):
    """ReBRAC's losses from the equations (Tarasov et al. 2023, with the FQL codebase's keys)."""
    sg = jax.lax.stop_gradient
    s, a = batch['observations'], batch['actions']
    _, _, critic_rng = jax.random.split(rng, 3)
    _, noise_rng = jax.random.split(critic_rng)
    # Critic: min target Q at the smoothed target action, minus the critic's BC penalty.
    next_mu = jnp.tanh(
        reference_gaussian(params['modules_target_actor'], batch['next_observations'])[0]
    )
    eps = jnp.clip(jax.random.normal(noise_rng, next_mu.shape) * 0.2, -0.5, 0.5)
    next_a = jnp.clip(next_mu + eps, -1, 1)
    next_q = reference_critic(params['modules_target_critic'], batch['next_observations'], next_a)
    penalty = config['alpha_critic'] * jnp.sum((next_a - batch['next_actions']) ** 2, -1)
    target = sg(batch['rewards'] + config['discount'] * batch['masks'] * (next_q.min(0) - penalty))
    critic_loss = jnp.mean((reference_critic(params['modules_critic'], s, a) - target) ** 2)
    # Actor: normalised Q at mu(s), plus the actor's BC penalty.
    mu = jnp.tanh(reference_gaussian(params['modules_actor'], s)[0])
    q = reference_critic(sg(params['modules_critic']), s, mu).min(0)
    bc = config['alpha_actor'] * jnp.mean(jnp.sum((mu - a) ** 2, -1))
    actor_loss = -jnp.mean(q / sg(jnp.abs(q).mean())) + bc
    return {'critic': critic_loss, 'actor': actor_loss, 'bc': bc}


def test_losses_and_gradients_match_the_equations_with_both_bc_terms():
    # The settings of the official-update test in test_agents_common.py: one update program.
    agent = with_config(tiny_agent(REBRAC).agent, **REBRAC_BC_SETTINGS)
    params, batch = agent.network.params, bootstrapping_batch(32, seed=4)
    rng = jax.random.split(agent.rng)[1]  # The key an update gives its losses.

    @jax.jit
    def reference():
        parts = {}
        for term in ('critic', 'actor'):
            value, grads = jax.value_and_grad(
                lambda p, term=term: reference_losses(p, batch, rng, agent.config)[term]
            )(params)
            parts[term] = value, grads
        return parts, reference_losses(params, batch, rng, agent.config)['bc']

    # Update 1 trains the critic only; update 2 (one done before) is full.
    critic_only, critic_only_info = agent.update(batch)
    full, full_info = agent.replace(network=agent.network.replace(step=jnp.int32(1))).update(batch)
    parts, bc = reference()
    (critic, critic_grads), (actor, actor_grads) = parts['critic'], parts['actor']
    for info in (critic_only_info, full_info):
        np.testing.assert_allclose(info['critic/critic_loss'], critic, rtol=1e-5)
        np.testing.assert_allclose(info['actor/total_loss'], actor, rtol=1e-5)
        np.testing.assert_allclose(info['actor/bc_loss'], bc, rtol=1e-5)
    assert float(bc) > 0  # The BC terms are really in play.
    # A full update trains the critic and the actor; between full updates only the critic.
    full_grads = jax.tree_util.tree_map(jnp.add, critic_grads, actor_grads)
    chex.assert_trees_all_close(first_update_gradient(full), full_grads, rtol=1e-4, atol=1e-6)
    grads = first_update_gradient(critic_only)
    chex.assert_trees_all_close(grads, critic_grads, rtol=1e-4, atol=1e-6)
    assert not any(np.any(g) for g in jax.tree_util.tree_leaves(grads['modules_actor']))


def official_loop(agent, dataset, key, num_updates, batch_size):
    """The official main.py: update i (from 1) with ``full_update=(i % actor_freq == 0)``."""
    size = len(dataset['observations'])
    for i in range(1, num_updates + 1):
        key, sample_key = jax.random.split(key)
        batch = gather(dataset, np.asarray(sample_indices(sample_key, size, batch_size)))
        agent, _ = agent.update(batch, full_update=i % agent.config['actor_freq'] == 0)
    return agent


# The fast tier checks the rule through update() (test_the_targets_follow_...) and fused blocks
# against the host loop (test_speed.py); this compiles the official full_update=... calls too.
@pytest.mark.slow
def test_fused_blocks_follow_the_official_actor_freq_rule():
    # The default config (actor_freq 2): the fused block is the one the speed test compiles.
    agent = tiny_agent(REBRAC).agent
    dataset = random_transitions(200, OBS_DIM, ACTION_DIM, seed=2)
    key, batch_size = jax.random.PRNGKey(3), agent.config['batch_size']
    expected = official_loop(agent, dataset, key, 7, batch_size)

    block = make_train_block(batch_size)
    data = to_device(dataset)
    # Blocks of 1 and 6 updates: the rule follows the agent's update count, not the block.
    first = block(stack_agents([agent]), key[None], data, 1)
    after_one = unstack_agent(first.agents, 0)
    second = block(first.agents, first.keys, data, 6)  # Donates the first block's state.
    fused = unstack_agent(second.agents, 0)
    assert int(fused.network.step) == 7
    chex.assert_trees_all_close(fused.network.params, expected.network.params, rtol=1e-4, atol=1e-6)
    # Update 1 is not full: the actor and its target have not moved; update 2 on moves them.
    for name in ('modules_actor', 'modules_target_actor'):
        initial = agent.network.params[name]
        chex.assert_trees_all_equal(after_one.network.params[name], initial)
        moved = fused.network.params[name]['mean_net']['kernel']
        assert not np.array_equal(moved, initial['mean_net']['kernel'])


def test_the_targets_follow_the_official_update_on_full_updates_only():
    agent = tiny_agent(REBRAC).agent
    first, _ = agent.update(bootstrapping_batch(32, 0))  # Update 1: the critic only.
    for name in ('modules_target_critic', 'modules_target_actor'):
        chex.assert_trees_all_equal(first.network.params[name], agent.network.params[name])
    # Update 2 is full: both targets move towards the online networks of before it.
    check_official_target_lag(first, bootstrapping_batch(32, 1), targets=('critic', 'actor'))


@pytest.mark.slow
def test_online_with_balanced_sampling_through_main_reads_next_actions(tmp_path):
    """Half of each online batch comes from the dataset and half from the replay buffer; both
    halves carry ``next_actions``, which the critic's BC term reads (a batch without them fails
    the update)."""
    result = run_main(
        f'--agent={REBRAC}',
        '--env_name=toy-multimodal',
        '--offline_steps=0',
        '--online_steps=40',
        '--balanced_sampling=1',
        '--agent.alpha_critic=0.5',
        '--agent.alpha_actor=0.1',
        '--log_interval=20',
        '--eval_interval=40',
        '--eval_episodes=2',
        f'--save_dir={tmp_path}',
        '--run_group=online',
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'online' / 'toy-multimodal' / 'rebrac' / 'seed0'
    header, rows = read_csv_rows(run_dir / 'train.csv')
    assert [r.split(',')[0] for r in rows] == ['20', '40']
    critic_loss = header.index('training/critic/critic_loss')
    assert all(np.isfinite(float(r.split(',')[critic_loss])) for r in rows)
    _, rows = read_csv_rows(run_dir / 'eval.csv')
    assert [r.split(',')[0] for r in rows] == ['1', '40']
