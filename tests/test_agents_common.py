"""Every agent file in agents/: the interface, its conventions, compile-once updates, TD learning,
the official ``temperature`` semantics, and the official use of seeds and keys (issues 2, 9,
10.4, 14.2 and 16)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
from helpers import (
    AGENT_IDS,
    AGENT_PATHS,
    REBRAC_BC_SETTINGS,
    agent_file,
    create_agent,
    tiny_agent,
    toy_dataset,
    with_config,
)

from drol_jax import presets
from drol_jax.data import gather, random_transitions
from drol_jax.hyperparameters import check_agent_config

pytestmark = pytest.mark.parametrize('path', AGENT_PATHS, ids=AGENT_IDS)


# The TD target's ensemble aggregation of the official agents that have the option.
OFFICIAL_Q_AGG = {'drol': 'mean', 'fql': 'mean', 'sac': 'min'}
# Agents whose official counterparts scale their policy's noise by ``temperature`` (the Gaussian
# policies): the official evaluation's temperature 0 makes them act deterministically.
NOISE_SCALED_BY_TEMPERATURE = ('iql', 'rebrac', 'sac')


def batches(dataset, size, seed):
    """Batches as the library samples them (``gather``: with next actions)."""
    rng = np.random.default_rng(seed)
    while True:
        yield gather(dataset, rng.integers(len(dataset['observations']), size=size))


def test_update_compiles_once(path):
    tiny = tiny_agent(path)
    update = tiny.file.agent_class.update
    stream = batches(toy_dataset(), tiny.config.batch_size, seed=0)
    agent, _ = tiny.agent.update(next(stream))
    compiled = update._cache_size()
    for _ in range(4):
        agent, _ = agent.update(next(stream))
    assert update._cache_size() == compiled  # No retracing across same-shape batches.
    assert int(agent.network.step) == 5


@pytest.mark.slow
def test_critic_td_loss_goes_down(path):
    tiny = tiny_agent(path)
    dataset = toy_dataset()
    for seed in (0, 1, 2):
        agent = create_agent(path, tiny.config, seed=seed)
        stream = batches(dataset, tiny.config.batch_size, seed)
        losses = []
        for _ in range(300):
            agent, info = agent.update(next(stream))
            losses.append(float(info['critic/critic_loss']))
        assert int(agent.network.step) == 300
        assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:5]), (seed, losses[:5], losses[-20:])


def test_interface_config_and_conventions(path):
    file = agent_file(path)
    config = file.default_config()
    assert isinstance(config.agent_name, str) and config.agent_name
    # FQL's shared defaults (FQL paper, Appendix); our agents keep them.
    assert config.lr == 3e-4 and config.batch_size == 256 and config.discount == 0.99
    assert tuple(config.actor_hidden_dims) == (512,) * 4 and config.layer_norm
    assert not config.actor_layer_norm and config.tau == 0.005
    assert config.get('q_agg') == OFFICIAL_Q_AGG.get(config.agent_name)

    # The file's conventions are consistent with its own config.
    check_agent_config(config, file.hyperparameter_checks)
    assert set(file.hyperparameter_checks) <= set(config)
    assert file.progress_metrics
    for preset, table in file.published_settings.items():
        assert preset in presets.PRESETS and preset in file.preset_labels
        for family, values in table.items():
            applied = presets.settings_for(file, config.agent_name, family, preset)
            assert applied.values == values
            check_agent_config(
                presets.apply_preset(config.copy_and_resolve_references(), applied, {}),
                file.hyperparameter_checks,
            )

    tiny = tiny_agent(path)
    agent, dataset = tiny.agent, toy_dataset()
    batch = gather(dataset, np.arange(tiny.config.batch_size))
    # total_loss as the validation log calls it (no rng); traced only, the update runs it.
    loss, info = jax.eval_shape(lambda a, b: a.total_loss(b, a.network.params), agent, batch)
    assert loss.shape == ()
    assert any(k.startswith('critic/') for k in info) and any(k.startswith('actor/') for k in info)
    _, update_info = agent.update(batch)
    assert set(info) <= set(update_info)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in update_info.values())
    # Every metric the progress bar shows exists (else the bar would silently show nothing).
    assert set(file.progress_metrics) <= set(update_info), file.progress_metrics
    single = jax.eval_shape(
        lambda a, o: a.sample_actions(o, seed=jax.random.PRNGKey(0)),
        agent,
        dataset['observations'][0],
    )
    assert single.shape == (2,)
    batched = agent.sample_actions(dataset['observations'][:5], seed=jax.random.PRNGKey(0))
    assert batched.shape == (5, 2) and np.all(np.abs(np.asarray(batched)) <= 1)
    # The target critic starts equal to the critic.
    params = agent.network.params
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, params['modules_critic'], params['modules_target_critic']
    )


def test_temperature_acts_as_in_the_official_agents(path):
    """FQL's evaluation loop passes temperature=0: the flow agents ignore it, the Gaussian ones
    act with their mean."""
    agent = tiny_agent(path).agent
    observations = toy_dataset()['observations'][:5]
    for k in range(3):
        key = jax.random.PRNGKey(k)
        cold = np.asarray(agent.sample_actions(observations, seed=key, temperature=0.0))
        warm = np.asarray(agent.sample_actions(observations, seed=key, temperature=1.0))
        other = np.asarray(agent.sample_actions(observations, seed=jax.random.PRNGKey(k + 10)))
        if agent.config['agent_name'] in NOISE_SCALED_BY_TEMPERATURE:
            other_cold = agent.sample_actions(
                observations, seed=jax.random.PRNGKey(k + 10), temperature=0.0
            )
            np.testing.assert_array_equal(cold, other_cold)  # The mean, whatever the seed.
            assert not np.array_equal(cold, warm) and not np.array_equal(warm, other)
        else:
            np.testing.assert_array_equal(cold, warm)
            # The seed still matters: the policy is stochastic, not collapsed to z = 0.
            assert not np.array_equal(cold, other)


def test_same_seed_gives_the_official_action(path):
    """Issue 14.2: on shared parameters, a seed gives the action the official agent gives."""
    tiny = tiny_agent(path)
    name = tiny.config.agent_name
    assert name in references.OFFICIAL_SAMPLE_ACTIONS, (
        f'no reference of the official seed handling of {name!r}: add one to '
        'OFFICIAL_SAMPLE_ACTIONS in tests/references.py.'
    )
    reference = references.OFFICIAL_SAMPLE_ACTIONS[name]
    observations = toy_dataset()['observations'][:6]

    @jax.jit
    def ours_and_official(agent, seed, temperature):
        return [
            (
                agent.sample_actions(obs, seed=seed, temperature=temperature),
                reference(agent, obs, seed, temperature),
            )
            for obs in (observations, observations[0])
        ]

    for k, temperature in ((0, 0.0), (1, 1.0), (2, 1.0)):
        for ours, official in ours_and_official(tiny.agent, jax.random.PRNGKey(k), temperature):
            assert ours.shape == official.shape
            np.testing.assert_allclose(ours, official, rtol=0, atol=1e-6)


# The settings under which an agent's update is compared with the official one: options away
# from their defaults, so that those are compared too. For DROL this is also the efficient loss
# against the naive one (the reference differentiates through all N*K candidates): routing over
# 4 candidates, 3 next-state candidates ranked by the mean Q, a 'min' TD target. ReBRAC: both BC
# terms in play (its critic reads the batch's next actions), the settings of test_rebrac.py's
# equations test, whose update program this test then shares. SAC: the plain TD target and the
# entropy backup, which reads alpha in the critic too. An agent's default settings share the
# update program its other tests compile.
UPDATE_SETTINGS = {
    'drol': [
        dict(
            num_candidates=4,
            critic_num_candidates=3,
            critic_selection_q_agg='mean',
            q_agg='min',
            bc_coef=0.7,
            q_coef=1.3,
        )
    ],
    'rebrac': [REBRAC_BC_SETTINGS],
    'sac': [{}, dict(backup_entropy=True)],
}
# Updates compared where the official update depends on the step, by the number of updates done
# before: ReBRAC's update 1 trains the critic only and update 2 is full (actor_freq 2).
UPDATES_DONE = {'rebrac': (0, 1)}
# Parameters moved from their initial values where that value would hide a term: SAC's alpha
# starts at 1, where ``alpha * x`` and ``x`` agree.
UPDATE_PARAMS = {'sac': {'modules_alpha': {'log_value': np.float32(-0.7)}}}


# Metrics our agents log beyond the official ones (under names the official agents do not use).
# On ReBRAC's critic-only updates the official agent logs no actor metrics; ours logs them
# (computed without a gradient), as a fused block's metrics have one structure for every update.
OUR_EXTRA_METRICS = {
    'drol': {'critic/target_mean'},
    'fql': {'critic/target_mean'},
    'rebrac': {'critic/target_mean'},
    'sac': {'critic/target_mean'},
}


def assert_trees_close(ours, official, rtol=1e-5):
    """Leaf by leaf, to ``rtol`` of the tree's largest entry (float32 sums differ at the end)."""
    scale = max(float(np.max(np.abs(x))) for x in jax.tree_util.tree_leaves(official))
    chex.assert_trees_all_close(ours, official, rtol=rtol, atol=rtol * scale)


def test_same_key_gives_the_official_update(path):
    """Same parameters, batch and agent key: the official update (parameters, optimizer state,
    next key and every official metric, by name and value), for every kind of step the agent
    makes. The optimizer state holds the gradient's moments, so it compares the gradients too
    (Adam's first step barely depends on their size)."""
    tiny = tiny_agent(path)
    name = tiny.config.agent_name
    assert name in references.OFFICIAL_TOTAL_LOSS, (
        f'no reference of the official total loss of {name!r}: add one to '
        'OFFICIAL_TOTAL_LOSS in tests/references.py.'
    )
    network = tiny.agent.network
    network = network.replace(params={**network.params, **UPDATE_PARAMS.get(name, {})})
    cases = [
        (settings, done)
        for settings in UPDATE_SETTINGS.get(name, [{}])
        for done in UPDATES_DONE.get(name, (0,))
    ]
    agents = [
        with_config(tiny.agent.replace(network=network.replace(step=jnp.int32(done))), **settings)
        for settings, done in cases
    ]
    # Most transitions bootstrap (mask 1), so the target critic's path counts. The batch has
    # the structure of every other test's, so ``update`` runs the program they compile.
    size = tiny.config.batch_size
    batch = gather(random_transitions(size, 2, 2, seed=3), np.arange(size))

    @jax.jit
    def official(agents):
        return [
            references.official_loop_update(agent, batch, name, done)
            for agent, (_, done) in zip(agents, cases, strict=True)
        ]

    for agent, theirs, case in zip(agents, official(agents), cases, strict=True):
        updated, info = agent.update(batch)
        check_official_update(updated, info, theirs, name, case)


def check_official_update(updated, info, official, name, case):
    """One update of ours equals the official one (see the test above)."""
    params, opt_state, rng, official_info = official
    np.testing.assert_array_equal(updated.rng, rng)
    assert_trees_close(updated.network.params, params)
    # Target networks average the networks as they were before the step: the same arithmetic
    # on the same inputs, so equal to the bit (the later online network would differ by about
    # tau * lr, far inside the tolerance above).
    for module in (m for m in params if m.startswith('modules_target_')):
        jax.tree_util.tree_map(
            np.testing.assert_array_equal, updated.network.params[module], params[module]
        )
    adam, official_adam = updated.network.opt_state[0], opt_state[0]
    assert int(adam.count) == int(official_adam.count) == 1
    assert_trees_close(adam.mu, official_adam.mu)
    assert_trees_close(adam.nu, official_adam.nu)
    # Every official metric under its official name; ours only add their own.
    assert set(official_info) <= set(info), (case, set(official_info) - set(info))
    extra = set(info) - set(official_info) - OUR_EXTRA_METRICS.get(name, set())
    if not any(k.startswith('actor/') for k in official_info):  # ReBRAC's critic-only update.
        extra = {k for k in extra if not k.startswith('actor/')}
    assert not extra, (case, extra)
    chex.assert_trees_all_close(
        {k: info[k] for k in official_info}, official_info, rtol=1e-5, atol=1e-6
    )
