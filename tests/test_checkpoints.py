"""Parameters move both ways between our agents and the official DROL/FQL code (issue 10.5).

The official agents keep their networks in a ``ModuleDict`` (``modules_<name>``), build each
policy head as ``ActorVectorField`` (an ``mlp`` of Dense + GELU layers on the concatenation of
observation, latent or noisy action, then time) and each critic as ``Value`` (an ensemblized
``value_net`` MLP with LayerNorm, on observation then action); their checkpoints are pickles of
``{'agent': flax.serialization.to_state_dict(agent)}`` named ``params_<step>.pkl``.
"""

import os
import pickle
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import AGENT_IDS, AGENT_PATHS, REPO, agent_file, create_agent, small_config, tiny_agent

from drol_jax import checkpoints
from drol_jax.errors import UserError
from drol_jax.run_folders import RunFolders
from drol_jax.updates import stack_agents

# The path test uses different sizes, so every kernel's input size shows the input layout; the
# function tests use the shared tiny agents (toy task sizes), whose programs are compiled once.
OBS_DIM, ACTION_DIM = 3, 2
TOY_OBS_DIM = 2


# ---------------------------------------------------------------------------------------------
# The official network structure, written out here (as in the official code's networks).


def official_init(scale: float = 1.0):
    return nn.initializers.variance_scaling(scale, 'fan_avg', 'uniform')


class OfficialMLP(nn.Module):
    hidden_dims: Sequence[int]
    activations: Any = nn.gelu
    activate_final: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(size, kernel_init=official_init())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = self.activations(x)
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return x


class OfficialActorVectorField(nn.Module):
    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False

    def setup(self):
        self.mlp = OfficialMLP(
            (*self.hidden_dims, self.action_dim), activate_final=False, layer_norm=self.layer_norm
        )

    def __call__(self, observations, actions, times=None):
        if times is None:
            inputs = jnp.concatenate([observations, actions], axis=-1)
        else:
            inputs = jnp.concatenate([observations, actions, times], axis=-1)
        return self.mlp(inputs)


class OfficialValue(nn.Module):
    hidden_dims: Sequence[int]
    layer_norm: bool = True
    num_ensembles: int = 2

    def setup(self):
        ensemble = nn.vmap(
            OfficialMLP,
            variable_axes={'params': 0},
            split_rngs={'params': True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_ensembles,
        )
        self.value_net = ensemble(
            (*self.hidden_dims, 1), activate_final=False, layer_norm=self.layer_norm
        )

    def __call__(self, observations, actions=None):
        inputs = [observations] if actions is None else [observations, actions]
        return self.value_net(jnp.concatenate(inputs, axis=-1)).squeeze(-1)


def official_modules(config) -> dict[str, tuple[nn.Module, bool]]:
    """The official module of each network name, and whether it takes a time input."""
    actor = OfficialActorVectorField(
        config['actor_hidden_dims'], config['action_dim'], config['actor_layer_norm']
    )
    value = OfficialValue(config['value_hidden_dims'], config['layer_norm'])
    return {
        'actor_onestep_flow': (actor, False),
        'actor_bc_flow': (actor, True),
        'critic': (value, False),
        'target_critic': (value, False),
    }


def module_inputs(with_time: bool, num=5, seed=0):
    """Inputs of one network for the toy sizes: observations, latent or action, (time)."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(num, TOY_OBS_DIM)).astype(np.float32)
    second = rng.uniform(-1, 1, (num, ACTION_DIM)).astype(np.float32)
    times = rng.uniform(size=(num, 1)).astype(np.float32)
    return (observations, second, times) if with_time else (observations, second)


# ---------------------------------------------------------------------------------------------
# Exact parameter paths.


def param_paths(path, hidden=(32, 32)):
    """``{'modules_x/mlp/Dense_0/kernel': shape}`` of an agent built with ``hidden`` layers."""
    config = small_config(agent_file(path).default_config())
    config.actor_hidden_dims = config.value_hidden_dims = hidden
    ex_obs, ex_act = np.zeros((1, OBS_DIM), np.float32), np.zeros((1, ACTION_DIM), np.float32)
    agent_class = agent_file(path).agent_class
    agent = jax.eval_shape(lambda o, a: agent_class.create(0, o, a, config), ex_obs, ex_act)
    flat = flax.traverse_util.flatten_dict(agent.network.params, sep='/')
    return agent, {name: tuple(leaf.shape) for name, leaf in flat.items()}


def policy_paths(module, in_dim, hidden=32):
    widths = [(in_dim, hidden), (hidden, hidden), (hidden, ACTION_DIM)]
    paths = {}
    for i, (fan_in, fan_out) in enumerate(widths):
        paths[f'modules_{module}/mlp/Dense_{i}/kernel'] = (fan_in, fan_out)
        paths[f'modules_{module}/mlp/Dense_{i}/bias'] = (fan_out,)
    return paths


def critic_paths(module, hidden=32, ensemble=2):
    in_dim = OBS_DIM + ACTION_DIM
    widths = [(in_dim, hidden), (hidden, hidden), (hidden, 1)]
    paths = {}
    for i, (fan_in, fan_out) in enumerate(widths):
        paths[f'modules_{module}/value_net/Dense_{i}/kernel'] = (ensemble, fan_in, fan_out)
        paths[f'modules_{module}/value_net/Dense_{i}/bias'] = (ensemble, fan_out)
        if i < len(widths) - 1:
            paths[f'modules_{module}/value_net/LayerNorm_{i}/scale'] = (ensemble, fan_out)
            paths[f'modules_{module}/value_net/LayerNorm_{i}/bias'] = (ensemble, fan_out)
    return paths


OFFICIAL_TREES = {
    'drol': {
        **policy_paths('actor_onestep_flow', OBS_DIM + ACTION_DIM),
        **critic_paths('critic'),
        **critic_paths('target_critic'),
    },
    'fql': {
        **policy_paths('actor_bc_flow', OBS_DIM + ACTION_DIM + 1),
        **policy_paths('actor_onestep_flow', OBS_DIM + ACTION_DIM),
        **critic_paths('critic'),
        **critic_paths('target_critic'),
    },
}


@pytest.mark.parametrize('name', sorted(OFFICIAL_TREES))
def test_parameter_paths_are_the_official_ones(name):
    agent, paths = param_paths(os.path.join(REPO, 'agents', f'{name}.py'))
    assert paths == OFFICIAL_TREES[name]
    # The whole agent's state dict has the official layout too.
    state = flax.serialization.to_state_dict(agent)
    assert set(state) == {'rng', 'network'}
    assert set(state['network']) == {'step', 'params', 'opt_state'}


# ---------------------------------------------------------------------------------------------
# Official files into our agents, our checkpoints into official files.


def official_outputs(config, params, inputs_seed=0):
    """Outputs of the official modules on our parameters, per network name."""
    outputs = {}
    for name, (module, with_time) in official_modules(config).items():
        if f'modules_{name}' in params:
            inputs = module_inputs(with_time, seed=inputs_seed)
            outputs[name] = module.apply({'params': params[f'modules_{name}']}, *inputs)
    return outputs


def our_outputs(agent, inputs_seed=0):
    outputs = {}
    for name, (_, with_time) in official_modules(agent.config).items():
        if f'modules_{name}' in agent.network.params:
            inputs = module_inputs(with_time, seed=inputs_seed)
            outputs[name] = agent.network.select(name)(*inputs)
    return outputs


@jax.jit
def both_outputs(agent):
    return our_outputs(agent), official_outputs(agent.config, agent.network.params)


# The agents whose official networks this file writes out; the other agents' layouts (Gaussian
# actor, state value, log-parameter) are tested both ways in their own test files.
WRITTEN_OUT = [p for p in AGENT_PATHS if os.path.basename(p)[:-3] in OFFICIAL_TREES]


@pytest.mark.parametrize('path', WRITTEN_OUT, ids=[os.path.basename(p)[:-3] for p in WRITTEN_OUT])
def test_official_params_pickle_restores_and_computes_the_same_function(path, tmp_path):
    source = tiny_agent(path).agent
    # Every network of the agent is one of the official ones, with the official structure.
    names = {k.removeprefix('modules_') for k in source.network.params}
    modules = official_modules(source.config)
    assert names <= set(modules), names
    for name in names:
        module, with_time = modules[name]
        official = jax.eval_shape(module.init, jax.random.PRNGKey(0), *module_inputs(with_time))
        ours = source.network.params[f'modules_{name}']
        assert jax.tree_util.tree_structure(official['params']) == jax.tree_util.tree_structure(
            ours
        ), name
        assert jax.tree_util.tree_map(np.shape, official['params']) == jax.tree_util.tree_map(
            np.shape, ours
        ), name

    # An official checkpoint file: params_<step>.pkl holding {'agent': state dict}.
    with open(tmp_path / 'params_7.pkl', 'wb') as f:
        pickle.dump({'agent': flax.serialization.to_state_dict(source)}, f)
    fresh = create_agent(path, tiny_agent(path).config, seed=5)
    pairs = zip(
        jax.tree_util.tree_leaves(fresh.network.params),
        jax.tree_util.tree_leaves(source.network.params),
        strict=True,
    )
    assert not all(np.array_equal(a, b) for a, b in pairs)
    restored = checkpoints.restore_agent(fresh, str(tmp_path), 7)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, restored.network.params, source.network.params
    )
    observations = module_inputs(False)[0]
    for k in range(2):
        key = jax.random.PRNGKey(k)
        np.testing.assert_array_equal(
            restored.sample_actions(observations, seed=key),
            source.sample_actions(observations, seed=key),
        )
    # The same parameters compute the same function in the official modules.
    ours, official = both_outputs(restored)
    assert set(ours) == names
    for name in names:
        np.testing.assert_allclose(ours[name], official[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('path', AGENT_PATHS, ids=AGENT_IDS)
def test_export_writes_our_checkpoint_as_an_official_pickle(path, tmp_path, capsys):
    # A two-seed run's checkpoint, written as a run writes it (one folder per seed).
    seeds = [create_agent(path, tiny_agent(path).config, seed=s) for s in (1, 2)]
    folders = RunFolders(str(tmp_path), 't', 'toy-multimodal', 'x', [1, 2])
    folders.check_writable()
    state = {'agents': stack_agents(seeds), 'sampler_keys': np.zeros((2, 2), np.uint32)}
    folders.save(20, {**state, 'step': 20})
    run_dir = folders.folders[1].run_dir
    assert checkpoints.main(['export', run_dir, '--out', str(tmp_path / 'official')]) == 0
    written = capsys.readouterr().out.strip()
    assert written == str(tmp_path / 'official' / 'params_20.pkl')  # The latest step.
    with open(written, 'rb') as f:
        state = pickle.load(f)['agent']
    assert set(state) == {'rng', 'network'}
    # The official code restores it with from_state_dict into its agent: the second seed.
    params = state['network']['params']
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, seeds[1].network.params)
    ours, official = jax.jit(lambda a, p: (our_outputs(a), official_outputs(a.config, p)))(
        seeds[1], params
    )
    for name in ours:
        np.testing.assert_allclose(ours[name], official[name], rtol=1e-6, atol=1e-6)
    # An explicit step; a folder without checkpoints is a one-line error.
    argv = ['export', run_dir, '--step', '20', '--out', str(tmp_path / 'explicit')]
    assert checkpoints.main(argv) == 0
    assert os.path.exists(tmp_path / 'explicit' / 'params_20.pkl')
    assert checkpoints.main(['export', str(tmp_path), '--out', str(tmp_path / 'none')]) == 2
    assert 'error: no checkpoint' in capsys.readouterr().err


def test_parameters_of_another_agent_are_a_one_line_error(tmp_path):
    drol, fql = (os.path.join(REPO, 'agents', f'{name}.py') for name in ('drol', 'fql'))
    with open(tmp_path / 'params_1.pkl', 'wb') as f:
        pickle.dump({'agent': flax.serialization.to_state_dict(tiny_agent(drol).agent)}, f)
    with pytest.raises(UserError, match='do not fit this agent') as raised:
        checkpoints.restore_agent(tiny_agent(fql).agent, str(tmp_path), 1)
    assert '\n' not in str(raised.value).strip()


def test_parameters_of_other_network_sizes_are_a_one_line_error(tmp_path):
    path = AGENT_PATHS[0]
    with open(tmp_path / 'params_1.pkl', 'wb') as f:
        pickle.dump({'agent': flax.serialization.to_state_dict(tiny_agent(path).agent)}, f)
    wider = small_config(agent_file(path).default_config())
    wider.actor_hidden_dims = wider.value_hidden_dims = (64,)
    ex = np.zeros((1, TOY_OBS_DIM), np.float32), np.zeros((1, ACTION_DIM), np.float32)
    other = jax.eval_shape(lambda o, a: agent_file(path).agent_class.create(0, o, a, wider), *ex)
    with pytest.raises(UserError, match='do not fit this agent'):
        checkpoints.restore_agent(other, str(tmp_path), 1)
