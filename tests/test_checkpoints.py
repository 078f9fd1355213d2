"""Parameters move both ways between our agents and the official DROL/FQL code (issues 10.5, 14.1).

The official agents keep their networks in a ``ModuleDict`` (``modules_<name>``), build each
policy head as ``ActorVectorField`` (an ``mlp`` of Dense + GELU layers on the concatenation of
observation, latent or noisy action, then time) and each critic as ``Value`` (an ensemblized
``value_net`` MLP with LayerNorm, on observation then action). Their agent is a
``flax.struct.PyTreeNode`` with ``rng``, ``network`` (a ``TrainState`` with ``step`` (1 at
creation), ``params`` and ``opt_state``; the official DROL's also has a ``model_state`` field,
an empty dict) and a static ``config``. Their checkpoints are pickles of
``{'agent': flax.serialization.to_state_dict(agent)}`` named ``params_<step>.pkl``. All of this
is written out below, as the official files lay it out.
"""

import functools
import os
import pickle
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import references
from helpers import REPO, agent_file, create_agent, small_config, tiny_agent

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
# The official agent and train state, field by field.


class OfficialModuleDict(nn.Module):
    modules: dict[str, nn.Module]

    @nn.compact
    def __call__(self, *args, name=None, **kwargs):
        if name is None:
            return {key: self.modules[key](*value) for key, value in kwargs.items()}
        return self.modules[name](*args, **kwargs)


def static():
    return flax.struct.field(pytree_node=False)


class OfficialTrainState(flax.struct.PyTreeNode):
    """The official FQL train state's fields (the official DROL's adds ``model_state``)."""

    step: int
    apply_fn: Any = static()
    model_def: Any = static()
    params: Any
    tx: Any = static()
    opt_state: Any

    def __call__(self, *args, params=None, **kwargs):
        variables = {'params': self.params if params is None else params}
        variables.update(getattr(self, 'model_state', {}))
        return self.apply_fn(variables, *args, **kwargs)

    def select(self, name):
        return functools.partial(self, name=name)


class OfficialDROLTrainState(OfficialTrainState):
    model_state: Any = flax.core.FrozenDict()


class OfficialAgent(flax.struct.PyTreeNode):
    rng: Any
    network: Any
    config: Any = static()


# Per agent: the official networks (in the official order) and train state.
OFFICIAL_LAYOUTS = {
    'drol': (('critic', 'target_critic', 'actor_onestep_flow'), OfficialDROLTrainState),
    'fql': (
        ('critic', 'target_critic', 'actor_bc_flow', 'actor_onestep_flow'),
        OfficialTrainState,
    ),
}


@functools.cache
def official_agent(config, seed):
    """An agent with the official layout for the toy sizes, its networks freshly initialised."""
    names, train_state = OFFICIAL_LAYOUTS[config['agent_name']]
    modules = official_modules(config)
    network_def = OfficialModuleDict({name: modules[name][0].clone() for name in names})
    inputs = {name: module_inputs(modules[name][1], num=1) for name in names}
    rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
    tx = optax.adam(config['lr'])

    @jax.jit  # Compiled as a whole: op-by-op initialisation takes seconds.
    def init(init_rng):
        params = network_def.init(init_rng, **inputs)['params']
        params['modules_target_critic'] = params['modules_critic']
        return params, tx.init(params)

    params, opt_state = init(init_rng)
    network = train_state(
        step=1,  # A Python int, as in the official train state.
        apply_fn=network_def.apply,
        model_def=network_def,
        params=params,
        tx=tx,
        opt_state=opt_state,
    )
    return OfficialAgent(rng, network, config)


def structure(state):
    """``{path: shape}`` of a state dict, empty dicts included (``None``)."""
    flat = flax.traverse_util.flatten_dict(state, keep_empty_nodes=True, sep='/')
    return {
        path: None if leaf is flax.traverse_util.empty_node else np.shape(leaf)
        for path, leaf in flat.items()
    }


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
    # The whole agent's state dict has the official fields too.
    state = flax.serialization.to_state_dict(agent)
    assert set(state) == {'rng', 'network'}
    official_fields = {'step', 'params', 'opt_state'}
    if OFFICIAL_LAYOUTS[name][1] is OfficialDROLTrainState:
        official_fields.add('model_state')
    assert set(state['network']) == official_fields


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


@pytest.mark.parametrize('name', sorted(OFFICIAL_LAYOUTS))
def test_official_parameter_file_restores_and_gives_the_official_actions(name, tmp_path):
    ours = tiny_agent(os.path.join(REPO, 'agents', f'{name}.py')).agent
    official = official_agent(ours.config, seed=5)
    # Every network of the agent is the official one, with the official structure.
    assert set(ours.network.params) == set(official.network.params)
    assert jax.tree_util.tree_map(np.shape, ours.network.params) == jax.tree_util.tree_map(
        np.shape, official.network.params
    )
    # An official checkpoint file: params_<step>.pkl holding {'agent': state dict}.
    with open(tmp_path / 'params_7.pkl', 'wb') as f:
        pickle.dump({'agent': flax.serialization.to_state_dict(official)}, f)
    restored = checkpoints.restore_agent(ours, str(tmp_path), 7)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, restored.network.params, official.network.params
    )
    assert restored.network.step.dtype == ours.network.step.dtype  # Not the official int.
    observations = module_inputs(False)[0]
    official_actions = jax.jit(references.OFFICIAL_SAMPLE_ACTIONS[name])
    for k in range(2):
        seed = jax.random.PRNGKey(k)
        np.testing.assert_allclose(
            restored.sample_actions(observations, seed=seed),
            official_actions(official, observations, seed),
            rtol=0,
            atol=1e-6,
        )
    # The same parameters compute the same function in the official modules.
    names = {k.removeprefix('modules_') for k in ours.network.params}
    mine, theirs = both_outputs(restored)
    assert set(mine) == names
    for network in names:
        np.testing.assert_allclose(mine[network], theirs[network], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('name', sorted(OFFICIAL_LAYOUTS))
def test_export_writes_the_official_file_of_our_checkpoint(name, tmp_path, capsys):
    path = os.path.join(REPO, 'agents', f'{name}.py')
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
        exported = pickle.load(f)['agent']
    # Exactly the official structure: every field, array and shape, nothing more.
    official = official_agent(seeds[1].config, seed=5)
    assert structure(exported) == structure(flax.serialization.to_state_dict(official))
    # The official code restores it with from_state_dict into its agent: the second seed,
    # which then acts as ours does.
    restored = flax.serialization.from_state_dict(official, exported)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, restored.network.params, seeds[1].network.params
    )
    observations = module_inputs(False)[0]
    seed = jax.random.PRNGKey(3)
    theirs = jax.jit(references.OFFICIAL_SAMPLE_ACTIONS[name])(restored, observations, seed)
    mine = seeds[1].sample_actions(observations, seed=seed)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6)
    # An explicit step; a folder without checkpoints is a one-line error.
    argv = ['export', run_dir, '--step', '20', '--out', str(tmp_path / 'explicit')]
    assert checkpoints.main(argv) == 0
    assert os.path.exists(tmp_path / 'explicit' / 'params_20.pkl')
    assert checkpoints.main(['export', str(tmp_path), '--out', str(tmp_path / 'none')]) == 2
    assert 'error: no checkpoint' in capsys.readouterr().err


def restore_error(agent, state, tmp_path) -> str:
    """The one-line error of restoring ``state`` (an official file's content) into ``agent``."""
    with open(tmp_path / 'params_1.pkl', 'wb') as f:
        pickle.dump({'agent': state}, f)
    with pytest.raises(UserError, match='do not fit this agent') as raised:
        checkpoints.restore_agent(agent, str(tmp_path), 1)
    message = str(raised.value)
    assert '\n' not in message.strip()
    return message


def test_parameters_of_another_agent_are_a_one_line_error(tmp_path):
    drol, fql = (os.path.join(REPO, 'agents', f'{name}.py') for name in ('drol', 'fql'))
    state = flax.serialization.to_state_dict(tiny_agent(drol).agent)
    message = restore_error(tiny_agent(fql).agent, state, tmp_path)
    assert 'the file lacks network/params/modules_actor_bc_flow' in message
    assert 'the agent has no network/model_state' in message
    assert 'parameters of another agent?' in message
    assert 'network sizes' not in message


def test_parameters_of_other_network_sizes_are_a_one_line_error(tmp_path):
    path = os.path.join(REPO, 'agents', 'fql.py')
    wider = small_config(agent_file(path).default_config())
    wider.actor_hidden_dims = wider.value_hidden_dims = (64,)
    ex = np.zeros((1, TOY_OBS_DIM), np.float32), np.zeros((1, ACTION_DIM), np.float32)
    other = jax.eval_shape(lambda o, a: agent_file(path).agent_class.create(0, o, a, wider), *ex)
    state = flax.serialization.to_state_dict(tiny_agent(path).agent)
    message = restore_error(other, state, tmp_path)
    kernel = 'network/params/modules_actor_bc_flow/mlp/Dense_0/kernel'
    assert (
        'shapes differ: ' in message and f'{kernel} is (5, 32) in the file, (5, 64) here' in message
    )
    assert 'other network sizes' in message and 'another agent' not in message


def test_a_missing_train_state_field_is_named_and_not_blamed_on_the_networks(tmp_path):
    """The official DROL file read by a DROL without ``model_state`` (the bug of issue 14.1)."""
    drol = tiny_agent(os.path.join(REPO, 'agents', 'drol.py')).agent
    state = flax.serialization.to_state_dict(drol)
    del state['network']['model_state']
    message = restore_error(drol, state, tmp_path)
    assert message.endswith('do not fit this agent: the file lacks network/model_state.')
