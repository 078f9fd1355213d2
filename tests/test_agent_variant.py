"""A researcher's new DROL variant is one new file (issue 9, 15.5).

The variant is the file a user would write: it imports DROL's agent file, subclasses its agent
and reuses its pure helpers. Its routing pulls the two nearest candidates (soft top-2: the
nearest gets ``top2_weight`` of the behaviour-cloning pull, the second the rest), with its own
hyperparameter, its own check and its own progress metric. It lives in a temp folder and trains
through main.py with no file under drol_jax/ changed.
"""

import json
import os
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, TINY, agent_file, one_line_error, read_csv_rows, run_main

from drol_jax.errors import ConfigError
from drol_jax.hyperparameters import check_agent_config

VARIANT = textwrap.dedent(
    '''
    """DROL with soft top-2 routing: the two nearest candidates share the behaviour-cloning pull."""

    import jax
    import jax.numpy as jnp

    from agents import drol
    from drol_jax.hyperparameters import in_interval


    def get_config():
        """DROL's defaults plus the share of the pull on the nearest candidate."""
        config = drol.get_config()
        config.agent_name = 'drol_top2'
        config.top2_weight = 0.75
        return config


    HYPERPARAMETER_CHECKS = {**drol.HYPERPARAMETER_CHECKS, 'top2_weight': in_interval(0.5, 1)}
    PROGRESS_METRICS = ('critic/critic_loss', 'actor/bc_loss', 'actor/second_distance')


    def soft_top2_loss(policy, q_values, latents, actions, *, top2_weight, **settings):
        """DROL's actor loss with the BC pull shared by the two nearest candidates.

        The nearest gets ``top2_weight`` of the pull, the second the rest; the Q term pushes the
        nearest, as in DROL. ``settings``: bc_coef, q_coef, actor_q_agg, normalize_q_loss.
        """
        candidates, distances, winners = drol.routing_pass(policy, latents, actions)
        num_pulled = min(2, latents.shape[1])
        _, nearest = jax.lax.top_k(-distances, num_pulled)  # (N, 2), nearest first.
        pull = jnp.array([top2_weight, 1.0 - top2_weight])[:num_pulled]
        pull = pull / pull.sum()
        pulled_latents = jnp.take_along_axis(latents, nearest[..., None], axis=1)
        pulled = jnp.clip(jax.vmap(policy, in_axes=1, out_axes=1)(pulled_latents), -1, 1)
        bc_loss = jnp.mean(jnp.mean((pulled - actions[:, None]) ** 2, axis=-1) @ pull)
        q_loss, q = drol.q_term(
            q_values(pulled[:, 0]), settings['actor_q_agg'], settings['normalize_q_loss']
        )
        loss = settings['bc_coef'] * bc_loss + settings['q_coef'] * q_loss
        return loss, {
            'actor_loss': loss,
            'bc_loss': bc_loss,
            'q_loss': q_loss,
            'q': q.mean(),
            **drol.routing_diagnostics(candidates, distances, winners),
            'second_distance': jnp.take_along_axis(distances, nearest[:, -1:], 1).mean(),
        }


    class DROLTop2Agent(drol.DROLAgent):
        """DROL whose actor loss is the soft top-2 one; everything else is DROL's."""

        def routed_loss(self, batch, grad_params, latents):
            """Soft top-2 routing on the K latents per state."""
            policy, q_values = self.actor_loss_networks(batch['observations'], grad_params)
            return soft_top2_loss(
                policy,
                q_values,
                latents,
                batch['actions'],
                top2_weight=self.config['top2_weight'],
                **drol.actor_loss_settings(self.config),
            )
    '''
)


@pytest.fixture(scope='module')
def variant_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('variant') / 'drol_top2.py'
    path.write_text(VARIANT)
    return str(path)


def test_the_library_does_not_know_the_variant():
    for file in Path(REPO, 'drol_jax').rglob('*.py'):
        assert 'top2' not in file.read_text(), file


def test_variant_declares_its_check_and_progress_metric(variant_path):
    variant = agent_file(variant_path)
    assert variant.agent_class.__name__ == 'DROLTop2Agent'  # DROL's class is not a candidate.
    config = variant.default_config()
    assert config.agent_name == 'drol_top2' and config.top2_weight == 0.75
    assert 'actor/second_distance' in variant.progress_metrics
    check_agent_config(config, variant.hyperparameter_checks)
    config.top2_weight = 0.2
    with pytest.raises(ConfigError) as raised:
        check_agent_config(config, variant.hyperparameter_checks)
    assert str(raised.value) == '--agent.top2_weight must be in [0.5, 1], got 0.2.'
    # DROL's own checks come with it.
    config.top2_weight, config.num_candidates = 0.6, 0
    with pytest.raises(ConfigError, match='--agent.num_candidates must be an integer >= 1'):
        check_agent_config(config, variant.hyperparameter_checks)


def soft_loss(module, latents, actions, top2_weight, q_coef=0.0):
    return module.soft_top2_loss(
        lambda x: x,
        lambda a: jnp.stack([a.sum(-1), a.sum(-1) + 1.0]),
        latents,
        actions,
        top2_weight=top2_weight,
        bc_coef=1.0,
        q_coef=q_coef,
        actor_q_agg='min',
        normalize_q_loss=True,
    )


def test_soft_top2_pulls_exactly_the_two_nearest_with_their_weights(variant_path):
    """With the identity as policy, the BC gradient on candidate j is 2 w_j (c_j - a) / (N d)."""
    module = agent_file(variant_path).module
    rng = np.random.default_rng(0)
    n, k, d, weight = 6, 5, 3, 0.7
    latents = jnp.asarray(rng.uniform(-0.9, 0.9, (n, k, d)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-0.9, 0.9, (n, d)), jnp.float32)
    grads = np.asarray(
        jax.jit(jax.grad(lambda z: soft_loss(module, z, actions, weight)[0]))(latents)
    )
    order = np.argsort(np.mean((np.asarray(latents) - np.asarray(actions)[:, None]) ** 2, -1))
    expected = np.zeros_like(grads)
    for i in range(n):
        for j, w in zip(order[i, :2], (weight, 1 - weight), strict=True):
            expected[i, j] = 2 * w * (latents[i, j] - actions[i]) / (n * d)
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-7)


def test_top2_weight_one_is_drol(variant_path):
    module = agent_file(variant_path).module
    drol = agent_file(os.path.join(REPO, 'agents', 'drol.py')).module
    rng = np.random.default_rng(1)
    latents = jnp.asarray(rng.uniform(-0.9, 0.9, (8, 4, 2)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-0.9, 0.9, (8, 2)), jnp.float32)

    @jax.jit
    def both(z):
        ours = soft_loss(module, z, actions, 1.0, q_coef=1.0)
        reference = drol.routed_actor_loss(
            policy=lambda x: x,
            q_values=lambda a: jnp.stack([a.sum(-1), a.sum(-1) + 1.0]),
            latents=z,
            actions=actions,
            bc_coef=1.0,
            q_coef=1.0,
            actor_q_agg='min',
            normalize_q_loss=True,
        )
        return ours, reference

    (ours, info), (reference, drol_info) = both(latents)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    assert set(info) - set(drol_info) == {'second_distance'}
    for name, value in drol_info.items():
        np.testing.assert_allclose(info[name], value, rtol=1e-6, err_msg=name)
    grad_ours = jax.jit(jax.grad(lambda z: both(z)[0][0]))(latents)
    grad_reference = jax.jit(jax.grad(lambda z: both(z)[1][0]))(latents)
    np.testing.assert_allclose(grad_ours, grad_reference, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_variant_trains_through_main(variant_path, tmp_path):
    result = run_main(
        f'--agent={variant_path}',
        '--env_name=toy-multimodal',
        '--offline_steps=200',
        '--log_interval=100',
        '--eval_interval=200',
        '--save_interval=200',
        '--eval_episodes=5',
        '--agent.top2_weight=0.6',
        f'--save_dir={tmp_path}',
        '--run_group=variant',
        '--progress=true',  # The progress bar shows the variant's own metric.
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / 'variant' / 'toy-multimodal' / 'drol_top2' / 'seed0'
    header, rows = read_csv_rows(run_dir / 'train.csv')
    assert [r.split(',')[0] for r in rows] == ['100', '200']
    column = header.index('training/actor/second_distance')
    assert all(np.isfinite(float(r.split(',')[column])) for r in rows)
    assert 'second_distance=' in result.stderr
    flags = json.loads((run_dir / 'flags.json').read_text())
    assert flags['agent']['top2_weight'] == 0.6 and flags['agent']['agent_name'] == 'drol_top2'
    assert flags['agent_file'] == variant_path
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['complete'] and summary['final_eval']['step'] == 200
    assert 'Done: seed 0, 200 steps' in result.stdout


@pytest.mark.slow
def test_bad_value_of_the_variants_hyperparameter_is_its_own_error(variant_path, tmp_path):
    result = run_main(
        f'--agent={variant_path}',
        '--env_name=toy-multimodal',
        '--agent.top2_weight=0.2',
        f'--save_dir={tmp_path}',
    )
    assert one_line_error(result) == 'error: --agent.top2_weight must be in [0.5, 1], got 0.2.'
