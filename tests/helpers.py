"""Shared pieces of the tests: the agent files, tiny configs and agents, data, runs, main.py."""

import dataclasses
import functools
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import chex
import flax
import jax
import numpy as np
import optax

from drol_jax.agent_file import AgentFile, load_agent_file
from drol_jax.data import to_device
from drol_jax.envs import toy
from drol_jax.run_flags import RunConfig
from drol_jax.updates import make_train_block, stack_agents, unstack_agent

REPO = str(Path(__file__).resolve().parent.parent)

# Every agent file in agents/: generic tests run on each, whatever agents the folder holds.
# DROL's variants (drol_<variant>.py) are left out: they have no official counterpart to match,
# and tests/test_variants.py checks each against DROL itself (its reduction) and through main.py.
AGENT_PATHS = sorted(
    str(p) for p in Path(REPO, 'agents').glob('*.py') if not p.name.startswith(('_', 'drol_'))
)
AGENT_IDS = [Path(p).stem for p in AGENT_PATHS]

TINY_HIDDEN = (32,)  # One hidden layer: the tests' programs compile about twice as fast.
# main.py flags for tiny networks (compile and train fast on CPU).
TINY = [
    '--agent.actor_hidden_dims=(32,32)',
    '--agent.value_hidden_dims=(32,32)',
    '--agent.batch_size=32',
]


@functools.cache
def agent_file(path: str) -> AgentFile:
    """An agent file, imported once per session: its jitted methods then compile once."""
    return load_agent_file(str(path))


def small_config(config, **overrides):
    """A copy of an agent config with tiny networks and batches, plus the given overrides."""
    config = config.copy_and_resolve_references()
    config.actor_hidden_dims = TINY_HIDDEN
    config.value_hidden_dims = TINY_HIDDEN
    config.batch_size = 32
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


# ReBRAC with both BC terms in play (its defaults are 0): the equations test and the
# official-update test compare its update under these settings, so one program serves both.
REBRAC_BC_SETTINGS = dict(alpha_actor=0.7, alpha_critic=0.4)


def toy_dataset(size=512, seed=0):
    return toy.TASKS['toy-multimodal'].make_dataset(size, seed=seed)


_CREATE_FNS = {}


def create(agent_class, config, seed, ex_observations, ex_actions):
    """``agent_class.create`` compiled once per (class, config): XLA builds the whole init.

    Eager creation compiles every initialiser op on its own, which costs seconds per new shape;
    the seed is traced, so one compiled program serves every seed.
    """
    key = (agent_class, json.dumps(config.to_dict(), sort_keys=True, default=str))
    if key not in _CREATE_FNS:
        _CREATE_FNS[key] = jax.jit(lambda s, o, a: agent_class.create(s, o, a, config))
    return _CREATE_FNS[key](seed, ex_observations, ex_actions)


def create_agent(path: str, config=None, seed=0, obs_dim=toy.OBS_DIM, action_dim=2):
    """An agent of the file at ``path`` (tiny config by default) for the given input sizes."""
    config = config or small_config(agent_file(path).default_config())
    ex_obs = np.zeros((1, obs_dim), np.float32)
    ex_act = np.zeros((1, action_dim), np.float32)
    return create(agent_file(path).agent_class, config, seed, ex_obs, ex_act)


def with_config(agent, **changes):
    """The same agent (same parameters) with some hyperparameters changed."""
    return agent.replace(config=flax.core.FrozenDict({**agent.config, **changes}))


class TinyAgent(NamedTuple):
    file: AgentFile
    config: Any
    agent: Any


@functools.cache
def tiny_agent(path: str) -> TinyAgent:
    """One tiny agent per agent file, shared by the tests so its methods compile once."""
    config = small_config(agent_file(path).default_config())
    return TinyAgent(agent_file(path), config, create_agent(path, config))


# conftest.py makes XLA compile fast and run these tiny networks slower; a long training
# compiles its block with XLA's default optimisations instead (measured: 8x faster updates for
# 3-4 s more compilation).
DEFAULT_OPTIMIZATION = {'xla_backend_optimization_level': 3, 'xla_cpu_use_fusion_emitters': True}


def default_optimization() -> dict:
    """Compiler options restoring XLA's defaults that the session's XLA_FLAGS changed."""
    flags = os.environ.get('XLA_FLAGS', '')
    return {k: v for k, v in DEFAULT_OPTIMIZATION.items() if k in flags}


def train_fused(agent_class, config, dataset, num_updates, seeds=(0,), optimize=False):
    """Train one agent per seed with the library's fused update block (seeds vmapped).

    ``optimize``: compile with XLA's default optimisations (for thousands of updates).
    Returns the list of trained agents, one per seed.
    """
    ex_obs, ex_act = dataset['observations'][:1], dataset['actions'][:1]
    agents = stack_agents([create(agent_class, config, s, ex_obs, ex_act) for s in seeds])
    keys = jax.numpy.stack([jax.random.PRNGKey(s + 1) for s in seeds])
    data = to_device(dataset)
    block = make_train_block(config.batch_size)
    if optimize:
        lowered = block.lower(agents, keys, data, num_updates)
        block = lowered.compile(compiler_options=default_optimization())
    result = block(agents, keys, data, num_updates)
    return [unstack_agent(result.agents, i) for i in range(len(seeds))]


def interval_dataset(intervals, size=4096, seed=0):
    """1-D actions uniform in separated intervals at a constant state; no reward, no bootstrap.

    Zero rewards and masks make the critic flat, so behaviour cloning drives the actor.
    """
    rng = np.random.default_rng(seed)
    which = rng.integers(len(intervals), size=size)
    low, high = np.array(intervals).T
    actions = rng.uniform(low[which], high[which])[:, None].astype(np.float32)
    observations = np.zeros((size, 2), np.float32)
    return {
        'observations': observations,
        'actions': actions,
        'rewards': np.zeros(size, np.float32),
        'masks': np.zeros(size, np.float32),
        'terminals': np.ones(size, np.float32),
        'next_observations': observations,
    }


# ---------------------------------------------------------------------------------------------
# Runs.


def toy_run_config(save_dir, **overrides) -> RunConfig:
    base = RunConfig(
        env_name='toy-multimodal',
        save_dir=str(save_dir),
        run_group='t',
        offline_steps=40,
        log_interval=10,
        eval_interval=20,
        save_interval=20,
        eval_episodes=4,
        progress=False,
    )
    return dataclasses.replace(base, **overrides)


def run_dir(save_dir, seed=0, agent='drol', env='toy-multimodal', group='t'):
    return os.path.join(str(save_dir), group, env, agent, f'seed{seed}')


# A behaviour-cloning agent written against the agent interface only: no hyperparameter checks,
# no progress metrics, no published settings (a third party's file).
THIRD_PARTY_AGENT = textwrap.dedent(
    '''
    """A minimal behaviour-cloning agent written against the agent interface only."""
    import flax
    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax

    from drol_jax.networks import ConditionedPolicy
    from drol_jax.train_state import ModuleDict, TrainState, nonpytree_field


    def get_config():
        return ml_collections.ConfigDict(dict(agent_name='plainbc', lr=1e-3, batch_size=32))


    class PlainBCAgent(flax.struct.PyTreeNode):
        rng: jax.Array
        network: TrainState
        config: dict = nonpytree_field()

        @jax.jit
        def total_loss(self, batch, grad_params, rng=None):
            prediction = self.network.select('actor')(batch['observations'], params=grad_params)
            loss = jnp.mean((prediction - batch['actions']) ** 2)
            return loss, {'actor/bc_loss': loss}

        @jax.jit
        def update(self, batch):
            network, info = self.network.apply_loss_fn(lambda p: self.total_loss(batch, p))
            return self.replace(network=network), info

        @jax.jit
        def sample_actions(self, observations, seed=None, temperature=1.0):
            return jnp.clip(self.network.select('actor')(observations), -1, 1)

        @classmethod
        def create(cls, seed, ex_observations, ex_actions, config):
            rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
            network_def = ModuleDict({'actor': ConditionedPolicy((32,), ex_actions.shape[-1])})
            params = network_def.init(init_rng, actor=(ex_observations,))['params']
            network = TrainState.create(network_def, params, optax.adam(config['lr']))
            return cls(rng, network, flax.core.FrozenDict(**config))
    '''
)


# DROL held in create() until a RELEASE file appears beside it: a run that is still starting up
# when a test stops it, however fast the machine and however warm the compilation cache.
HELD_AGENT = """
import os
import time

from agents import drol

get_config = drol.get_config
HERE = os.path.dirname(os.path.abspath(__file__))


class DROLHeldAgent(drol.DROLAgent):
    @classmethod
    def create(cls, seed, ex_observations, ex_actions, config):
        while not os.path.exists(os.path.join(HERE, 'RELEASE')):
            time.sleep(0.05)
        return super().create(seed, ex_observations, ex_actions, config)
"""


def write_agent_file(folder, name: str, source: str) -> str:
    """Write an agent file ``folder/name`` and return its path."""
    path = os.path.join(str(folder), name)
    with open(path, 'w') as f:
        f.write(source)
    return path


# ---------------------------------------------------------------------------------------------
# main.py in a subprocess.


def run_main(*args, cwd=REPO, timeout=300):
    """``python main.py --progress=false ARGS``; a later flag wins, so ARGS may override it."""
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, 'main.py'), '--progress=false', *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_csv_rows(path):
    with open(path) as f:
        lines = f.read().strip().splitlines()
    return lines[0].split(','), lines[1:]


def check_toy_run(run_dir, agent_name, stdout, steps, seed=0):
    """What a finished toy-multimodal run of ``steps`` updates leaves, and what it printed.

    Logged and evaluated after the first update (evaluation), at half the run and at its end;
    one checkpoint at the end. ``stdout`` is main.py's (a sweep job's log).
    """
    half = steps // 2
    header, rows = read_csv_rows(os.path.join(run_dir, 'eval.csv'))
    assert header[0] == 'step' and 'evaluation/episode.return' in header
    assert [r.split(',')[0] for r in rows] == ['1', str(half), str(steps)]
    header, rows = read_csv_rows(os.path.join(run_dir, 'train.csv'))
    assert [r.split(',')[0] for r in rows] == [str(half), str(steps)]
    assert any(h.startswith('training/') for h in header)
    assert os.path.exists(os.path.join(run_dir, f'checkpoint_{steps}.msgpack'))
    with open(os.path.join(run_dir, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['complete'] and summary['dataset']['source'] == 'toy'
    with open(os.path.join(run_dir, 'flags.json')) as f:
        flags = json.load(f)
    assert flags['agent']['agent_name'] == agent_name and flags['env_name'] == 'toy-multimodal'
    # One printed line per evaluation, and a closing line naming the run folder.
    lines = stdout.splitlines()
    evaluations = [line.split(':')[0] for line in lines if line.startswith('step ')]
    expected = [f'step {s} seed {seed}' for s in (1, half, steps)]
    assert [e for e in evaluations if e.endswith(f' seed {seed}')] == expected, stdout
    done = [line for line in lines if line.startswith(f'Done: seed {seed},')]
    assert len(done) == 1 and done[0].endswith(f'Run folder: {run_dir}'), stdout


def one_line_error(result) -> str:
    """The single ``error:`` line of a failed main.py run (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


# ---------------------------------------------------------------------------------------------
# The official agents: their configs' shared entries, parameter layouts (paths and shapes) and
# the networks those layouts define, written out.

# The entries of get_config() that every agent of the official FQL codebase has, with one value.
OFFICIAL_SHARED_CONFIG = dict(
    lr=3e-4,
    batch_size=256,
    actor_hidden_dims=(512, 512, 512, 512),
    value_hidden_dims=(512, 512, 512, 512),
    layer_norm=True,
    actor_layer_norm=False,
    discount=0.99,
    tau=0.005,
)


def mlp_layout(prefix, widths, layer_norm=False, activate_final=False, ensemble=None):
    """``{path: shape}`` of an official MLP from its input width through each layer's width.

    ``Dense_i`` per layer; ``LayerNorm_i`` after each activated layer (all but the last unless
    ``activate_final``); an ensemble adds a leading axis to every array.
    """
    lead = () if ensemble is None else (ensemble,)
    layout = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layout[f'{prefix}/Dense_{i}/kernel'] = (*lead, fan_in, fan_out)
        layout[f'{prefix}/Dense_{i}/bias'] = (*lead, fan_out)
        activated = i < len(widths) - 2 or activate_final
        if layer_norm and activated:
            layout[f'{prefix}/LayerNorm_{i}/scale'] = (*lead, fan_out)
            layout[f'{prefix}/LayerNorm_{i}/bias'] = (*lead, fan_out)
    return layout


def params_shapes(params) -> dict:
    """``{path: shape}`` of a parameter tree, paths joined with '/'."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
    return {path: tuple(np.shape(leaf)) for path, leaf in flat.items()}


def official_state_dict(layout, lr=3e-4, seed=0, step=1):
    """An official agent's ``to_state_dict`` for parameters of ``layout`` (random values).

    The official agents hold ``rng`` and a ``network`` train state with ``step``, ``params`` and
    the ``opt_state`` of ``optax.adam``.
    """
    rng = np.random.default_rng(seed)
    flat = {
        tuple(path.split('/')): rng.normal(scale=0.5, size=shape).astype(np.float32)
        for path, shape in layout.items()
    }
    params = flax.traverse_util.unflatten_dict(flat)
    opt_state = optax.adam(lr).init(params)
    return {
        'rng': np.asarray(jax.random.PRNGKey(seed + 100)),
        'network': {
            'step': np.int32(step),
            'params': params,
            'opt_state': flax.serialization.to_state_dict(opt_state),
        },
    }


def reference_mlp(params, x, layer_norm=False, activate_final=False):
    """The official MLP written out: Dense, then GELU and LayerNorm (eps 1e-6) where activated."""
    num = sum(1 for name in params if name.startswith('Dense_'))
    for i in range(num):
        x = x @ params[f'Dense_{i}']['kernel'] + params[f'Dense_{i}']['bias']
        if i < num - 1 or activate_final:
            x = jax.nn.gelu(x, approximate=True)
            if layer_norm:
                mean = x.mean(-1, keepdims=True)
                var = ((x - mean) ** 2).mean(-1, keepdims=True)
                ln = params[f'LayerNorm_{i}']
                x = (x - mean) / jax.numpy.sqrt(var + 1e-6) * ln['scale'] + ln['bias']
    return x


def reference_critic(params, observations, actions):
    """The official ensemble ``Value`` on (s, a): ``(E, ...)`` Q-values, LayerNorm on."""
    x = jax.numpy.concatenate([observations, actions], axis=-1)
    return jax.vmap(lambda p: reference_mlp(p, x, layer_norm=True)[..., 0])(params['value_net'])


def reference_gaussian(params, observations):
    """Mean and log-std of the official Gaussian ``Actor`` (log-std clipped to [-5, 2]).

    The log-std is a head (``log_std_net``), a learned vector (``log_stds``) or zero.
    """
    features = reference_mlp(params['actor_net'], observations, activate_final=True)
    mean = features @ params['mean_net']['kernel'] + params['mean_net']['bias']
    if 'log_std_net' in params:
        log_std = features @ params['log_std_net']['kernel'] + params['log_std_net']['bias']
    elif 'log_stds' in params:
        log_std = jax.numpy.broadcast_to(params['log_stds'], mean.shape)
    else:
        log_std = jax.numpy.zeros_like(mean)
    return mean, jax.numpy.clip(log_std, -5, 2)


def gaussian_log_prob(x, mean, log_std):
    """``log N(x; mean, diag(exp(log_std))^2)`` summed over the last axis."""
    z = (x - mean) / jax.numpy.exp(log_std)
    return jax.numpy.sum(-0.5 * z**2 - log_std - 0.5 * jax.numpy.log(2 * jax.numpy.pi), axis=-1)


def check_official_layout_both_ways(path, layout, folder, step=3):
    """Parameters move both ways between the tiny agent of ``path`` and the official layout.

    Ours -> official: the agent's state dict is ``{'rng', 'network': {'step', 'params',
    'opt_state'}}`` with exactly ``layout``'s parameters and Adam's state for them. Official ->
    ours: a ``params_<step>.pkl`` of ``layout`` (random values) restores through
    ``restore_agent``. Returns the restored agent and the official parameters.
    """
    from drol_jax.checkpoints import restore_agent

    agent = tiny_agent(path).agent
    official = official_state_dict(layout, lr=agent.config['lr'], step=step)
    ours = flax.serialization.to_state_dict(agent)
    assert set(ours) == {'rng', 'network'}
    assert set(ours['network']) == {'step', 'params', 'opt_state'}
    assert params_shapes(ours['network']['params']) == layout
    assert jax.tree_util.tree_map(np.shape, ours['network']['opt_state']) == (
        jax.tree_util.tree_map(np.shape, official['network']['opt_state'])
    )
    with open(os.path.join(str(folder), f'params_{step}.pkl'), 'wb') as f:
        pickle.dump({'agent': official}, f)
    restored = restore_agent(agent, str(folder), step)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, restored.network.params, official['network']['params']
    )
    assert int(restored.network.step) == step
    return restored, official['network']['params']


def bootstrapping_batch(size=64, seed=0):
    """A batch of random transitions (toy sizes), most of them bootstrapping (mask 1).

    Every next-state term of a loss then counts; the toy task's transitions all end an episode.
    """
    from drol_jax.data import gather, random_transitions

    dataset = random_transitions(4 * size, toy.OBS_DIM, 2, seed=seed)
    return gather(dataset, np.random.default_rng(seed).integers(4 * size, size=size))


def first_update_gradient(updated):
    """The gradient of an agent's first update, read from Adam's first moment.

    After one step from zero moments, ``mu = (1 - b1) * g`` per entry (optax's default
    ``b1 = 0.9``), so a test can check a loss's gradient through the agent's own compiled
    update instead of compiling a second program for ``jax.grad`` of the loss.
    """
    adam = updated.network.opt_state[0]
    assert int(adam.count) == 1, 'only the first update holds the gradient itself'
    return jax.tree_util.tree_map(lambda mu: mu / (1 - 0.9), adam.mu)


def check_official_target_lag(agent, batch, targets=('critic',)):
    """One update moves each target as the official agents do, and returns the new agent.

    ``target <- tau * online + (1 - tau) * target`` with the online parameters from *before* the
    gradient step (so a target equal to its online network stays put at the first update).
    """
    updated, _ = agent.update(batch)
    tau, before, after = agent.config['tau'], agent.network.params, updated.network.params
    for name in targets:
        expected = jax.tree_util.tree_map(
            lambda online, target: tau * online + (1 - tau) * target,
            before[f'modules_{name}'],
            before[f'modules_target_{name}'],
        )
        chex.assert_trees_all_close(after[f'modules_target_{name}'], expected, rtol=1e-6)
    return updated
