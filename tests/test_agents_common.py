"""Every agent file in agents/: the interface, its conventions, compile-once updates, TD learning,
and the official ``temperature`` semantics (issues 2, 9, 10.4 and 16)."""

import jax
import numpy as np
import pytest
from helpers import AGENT_IDS, AGENT_PATHS, agent_file, create_agent, tiny_agent, toy_dataset

from drol_jax import presets
from drol_jax.data import gather
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
