"""IMPALA encoders: output shapes, FQL's parameter trees, one encoding per state."""

import copy
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drol_jax import encoders
from drol_jax.encoders import ImpalaEncoder, make_encoder
from drol_jax.errors import ConfigError
from drol_jax.networks import ConditionedPolicy, EnsembleCritic
from drol_jax.train_state import ModuleDict

HIDDEN = (512, 512, 512, 512)  # The paper's networks: the layouts are those of real checkpoints.
ACTION_DIM = 5
IMAGES = jax.ShapeDtypeStruct((1, 64, 64, 9), jnp.uint8)  # 64x64x3 frames, frame stack 3.
ACTIONS = jax.ShapeDtypeStruct((1, ACTION_DIM), jnp.float32)
TIMES = jax.ShapeDtypeStruct((1, 1), jnp.float32)
# name -> (stack widths, residual blocks per stack, MLP width), as FQL's encoder table has them.
ARCHITECTURES = {
    'impala': ((16, 32, 32), 2, 512),
    'impala_small': ((16, 32, 32), 1, 512),
    'impala_large': ((64, 128, 128), 2, 1024),
}


def encoder_layout(name, in_channels=9, image=64):
    """{path: shape} of an encoder's parameters, written from the architecture."""
    stacks, blocks, width = ARCHITECTURES[name]
    layout, channels = {}, in_channels
    for i, features in enumerate(stacks):
        for j in range(1 + 2 * blocks):
            source = channels if j == 0 else features
            layout[f'stack_blocks_{i}/Conv_{j}/kernel'] = (3, 3, source, features)
            layout[f'stack_blocks_{i}/Conv_{j}/bias'] = (features,)
        channels, image = features, math.ceil(image / 2)  # Each stack max-pools by 2.
    layout['MLP_0/Dense_0/kernel'] = (image * image * channels, width)
    layout['MLP_0/Dense_0/bias'] = (width,)
    return layout


def mlp_layout(in_dim, out_dim, ensemble=None, layer_norm=False):
    lead = () if ensemble is None else (ensemble,)
    layout, dims = {}, (in_dim, *HIDDEN, out_dim)
    for i in range(len(dims) - 1):
        layout[f'Dense_{i}/kernel'] = (*lead, dims[i], dims[i + 1])
        layout[f'Dense_{i}/bias'] = (*lead, dims[i + 1])
        if layer_norm and i < len(HIDDEN):
            layout[f'LayerNorm_{i}/scale'] = layout[f'LayerNorm_{i}/bias'] = (*lead, dims[i + 1])
    return layout


def nest(prefix, layout):
    return {f'{prefix}/{path}': shape for path, shape in layout.items()}


def flat_shapes(tree):
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {'/'.join(k.key for k in path): tuple(leaf.shape) for path, leaf in leaves}


def init_shapes(modules, inputs):
    init = jax.eval_shape(ModuleDict(modules).init, jax.random.PRNGKey(0), **inputs)
    return flat_shapes(init['params'])


def critic_def(name):
    return EnsembleCritic(HIDDEN, layer_norm=True, encoder=make_encoder(name))


@pytest.mark.parametrize('name', sorted(ARCHITECTURES))
def test_encoder_layout_and_output_shape(name):
    encoder = make_encoder(name)
    images = jax.ShapeDtypeStruct((2, 3, 64, 64, 9), jnp.uint8)  # Two leading batch axes.
    params = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), images)
    assert flat_shapes(params['params']) == encoder_layout(name)
    width = ARCHITECTURES[name][2]
    assert jax.eval_shape(encoder.apply, params, images).shape == (2, 3, width)


def test_drol_parameter_tree_is_the_official_one():
    critic = critic_def('impala_small')
    modules = {
        'actor_onestep_flow': ConditionedPolicy(
            HIDDEN, ACTION_DIM, encoder=make_encoder('impala_small')
        ),
        'critic': critic,
        'target_critic': copy.deepcopy(critic),
    }
    found = init_shapes(modules, {m: (IMAGES, ACTIONS) for m in modules})
    layout = encoder_layout('impala_small')
    expected = nest('modules_actor_onestep_flow/encoder', layout)
    expected |= nest('modules_actor_onestep_flow/mlp', mlp_layout(512 + 5, 5))
    for module in ('critic', 'target_critic'):
        expected |= nest(f'modules_{module}/encoder', layout)
        expected |= nest(f'modules_{module}/value_net', mlp_layout(517, 1, 2, layer_norm=True))
    assert found == expected


def test_fql_parameter_tree_keeps_the_bc_flow_encoder_beside_its_module():
    # FQL encodes once for its flow steps: the BC flow's encoder is also a module of its own,
    # and its parameters live there, not under the flow.
    bc_encoder = make_encoder('impala_small')
    critic = critic_def('impala_small')
    modules = {
        'critic': critic,
        'target_critic': copy.deepcopy(critic),
        'actor_bc_flow': ConditionedPolicy(HIDDEN, ACTION_DIM, encoder=bc_encoder),
        'actor_onestep_flow': ConditionedPolicy(
            HIDDEN, ACTION_DIM, encoder=make_encoder('impala_small')
        ),
        'actor_bc_flow_encoder': bc_encoder,
    }
    inputs = {m: (IMAGES, ACTIONS) for m in modules}
    inputs |= {'actor_bc_flow': (IMAGES, ACTIONS, TIMES), 'actor_bc_flow_encoder': (IMAGES,)}
    found = init_shapes(modules, inputs)
    layout = encoder_layout('impala_small')
    expected = nest('modules_actor_bc_flow_encoder', layout)
    expected |= nest('modules_actor_bc_flow/mlp', mlp_layout(512 + 6, 5))
    expected |= nest('modules_actor_onestep_flow/encoder', layout)
    expected |= nest('modules_actor_onestep_flow/mlp', mlp_layout(512 + 5, 5))
    for module in ('critic', 'target_critic'):
        expected |= nest(f'modules_{module}/encoder', layout)
        expected |= nest(f'modules_{module}/value_net', mlp_layout(517, 1, 2, layer_norm=True))
    assert found == expected


def random_params(module, *inputs, **options):
    """Parameters of ``module`` filled with host random numbers (nothing compiled)."""
    init = functools.partial(module.init, **options)
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0), *inputs)
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(
        lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes
    )


def test_encoder_divides_by_255_and_flattens_each_image_before_its_mlp():
    encoder = ImpalaEncoder(stack_sizes=(), mlp_hidden_dims=(4,))  # No stacks: ReLU, MLP.
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 2), dtype=np.uint8)
    params = random_params(encoder, images)
    dense = params['params']['MLP_0']['Dense_0']
    flat = (images.astype(np.float32) / 255.0).reshape(2, -1)
    expected = jax.nn.gelu(flat @ dense['kernel'] + dense['bias'])
    np.testing.assert_allclose(jax.jit(encoder.apply)(params, images), expected, rtol=1e-5)


TINY_ENCODER = functools.partial(ImpalaEncoder, stack_sizes=(2,), num_blocks=1)


def test_each_state_is_encoded_once_with_the_same_outputs_as_tiled_images():
    policy = ConditionedPolicy((8,), 2, encoder=TINY_ENCODER(mlp_hidden_dims=(8,)))
    critic = EnsembleCritic((8,), encoder=TINY_ENCODER(mlp_hidden_dims=(8,)))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 4, 4, 6), dtype=np.uint8)
    latents = rng.standard_normal((3, 4, 2)).astype(np.float32)  # K = 4 latents per state.
    p_params = random_params(policy, images, latents)
    c_params = random_params(critic, images, latents)

    @jax.jit
    def outputs(images, latents):
        tiled = jnp.broadcast_to(images[:, None], (3, 4, *images.shape[1:]))
        actions = policy.apply(p_params, images, latents)
        features = policy.apply(p_params, images, method=lambda m, x: m.encoder(x))
        return (
            (actions, policy.apply(p_params, tiled, latents)),
            policy.apply(p_params, features, latents, is_encoded=True),
            (critic.apply(c_params, images, actions), critic.apply(c_params, tiled, actions)),
        )

    (actions, from_tiled), from_features, (q, q_from_tiled) = outputs(images, latents)
    assert actions.shape == (3, 4, 2) and q.shape == (2, 3, 4)
    np.testing.assert_allclose(actions, from_tiled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actions, from_features, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q, q_from_tiled, rtol=1e-5, atol=1e-6)


def test_without_an_encoder_the_modules_broadcast_flat_states():
    policy = ConditionedPolicy((8,), 2)
    states = np.ones((3, 5), np.float32)
    latents = np.random.default_rng(0).standard_normal((3, 4, 2)).astype(np.float32)
    params = random_params(policy, states, latents)
    tiled = np.broadcast_to(states[:, None], (3, 4, 5))
    broadcast, from_tiled = jax.jit(
        lambda: (policy.apply(params, states, latents), policy.apply(params, tiled, latents))
    )()
    np.testing.assert_array_equal(broadcast, from_tiled)
    with pytest.raises(ValueError, match='fewer batch axes'):
        jax.eval_shape(policy.apply, params, tiled, latents[:, 0])


def test_dropout_is_active_only_while_training():
    encoder = TINY_ENCODER(dropout_rate=0.5, mlp_hidden_dims=(8,))
    images = np.full((2, 4, 4, 3), 200, np.uint8)
    params = random_params(encoder, images, train=False)

    @jax.jit
    def outputs(images):
        trained = encoder.apply(params, images, rngs={'dropout': jax.random.PRNGKey(1)})
        return trained, encoder.apply(params, images, train=False)

    trained, evaluated = outputs(images)
    assert not np.allclose(trained, evaluated)
    np.testing.assert_array_equal(evaluated, outputs(images)[1])


def test_encoder_names():
    assert make_encoder(None) is None
    assert set(encoders.ENCODERS) == {'impala', 'impala_small', 'impala_large', 'impala_debug'}
    first, second = make_encoder('impala'), make_encoder('impala')
    assert first is not second  # Every module owns its encoder.
    with pytest.raises(ConfigError, match='impala_small'):
        make_encoder('resnet')


# Official visual agents: every module that sees observations owns an encoder, kept under it as
# `encoder`, except the flows that FQL and IFQL integrate, whose encoder is a module of its own
# (`modules_<flow>_encoder`). Per agent: {module: where its encoder's parameters live}.
OFFICIAL_ENCODERS = {
    'drol': {
        'actor_onestep_flow': 'modules_actor_onestep_flow/encoder',
        'critic': 'modules_critic/encoder',
        'target_critic': 'modules_target_critic/encoder',
    },
    'fql': {
        'actor_bc_flow': 'modules_actor_bc_flow_encoder',
        'actor_onestep_flow': 'modules_actor_onestep_flow/encoder',
        'critic': 'modules_critic/encoder',
        'target_critic': 'modules_target_critic/encoder',
    },
    'iql': {
        'value': 'modules_value/encoder',
        'critic': 'modules_critic/encoder',
        'target_critic': 'modules_target_critic/encoder',
        'actor': 'modules_actor/encoder',
    },
    'rebrac': {
        'critic': 'modules_critic/encoder',
        'target_critic': 'modules_target_critic/encoder',
        'actor': 'modules_actor/encoder',
        'target_actor': 'modules_target_actor/encoder',
    },
    'ifql': {
        'value': 'modules_value/encoder',
        'critic': 'modules_critic/encoder',
        'target_critic': 'modules_target_critic/encoder',
        'actor_flow': 'modules_actor_flow_encoder',
    },
}
SMALL_IMAGES = (16, 16, 6)  # Two stacked 16x16 RGB frames: impala_small gives 2x2x32 features.


def abstract_agent(name, encoder, observation_shape):
    """Shapes of a tiny agent's arrays (``create`` traced, nothing compiled or run)."""
    from helpers import agent_file, small_config

    file = agent_file(f'agents/{name}.py')
    config = small_config(file.default_config(), encoder=encoder)
    dtype = jnp.uint8 if encoder else jnp.float32
    observations = jax.ShapeDtypeStruct((1, *observation_shape), dtype)
    actions = jax.ShapeDtypeStruct((1, ACTION_DIM), jnp.float32)
    return jax.eval_shape(
        lambda o, a: file.agent_class.create(0, o, a, config), observations, actions
    )


def official_visual_layout(name):
    """The official visual agent's parameters: its state agent's heads on 512 encoder features
    (the width of impala_small's MLP), plus one impala_small encoder per module."""
    from helpers import params_shapes

    heads = params_shapes(abstract_agent(name, None, (512,)).network.params)
    layout = encoder_layout('impala_small', SMALL_IMAGES[-1], SMALL_IMAGES[0])
    for where in OFFICIAL_ENCODERS[name].values():
        heads |= nest(where, layout)
    return heads


# The panel's agents in the slow tier: each costs two seconds of tracing.
PANEL = ('ifql', 'iql', 'rebrac')


@pytest.mark.parametrize(
    'name', [pytest.param(n, marks=[pytest.mark.slow] * (n in PANEL)) for n in OFFICIAL_ENCODERS]
)
def test_visual_agents_restore_official_parameters_and_export_the_official_layout(name, tmp_path):
    import pickle

    from helpers import official_state_dict, params_shapes

    from drol_jax.checkpoints import restore_agent

    agent = abstract_agent(name, 'impala_small', SMALL_IMAGES)
    layout = official_visual_layout(name)
    # Ours -> official: our state dict has the official fields and parameter tree.
    assert params_shapes(agent.network.params) == layout, name
    # Official -> ours: an official params_<step>.pkl of that layout restores.
    official = official_state_dict(layout, lr=agent.config['lr'], step=7)
    if name == 'drol':
        official['network']['model_state'] = {}  # The official DROL's train state has it.
    with open(tmp_path / 'params_7.pkl', 'wb') as f:
        pickle.dump({'agent': official}, f)
    restored = restore_agent(agent, str(tmp_path), 7)
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, restored.network.params, official['network']['params']
    )
    assert int(restored.network.step) == 7


def test_sac_refuses_an_encoder():
    from helpers import agent_file

    from drol_jax.hyperparameters import check_agent_config

    file = agent_file('agents/sac.py')
    config = file.default_config()
    config.encoder = 'impala_small'
    with pytest.raises(ConfigError, match='official SAC has no image encoder'):
        check_agent_config(config, file.hyperparameter_checks)
