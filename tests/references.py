"""Reference implementations shared by the tests and the benchmarks.

Each one restates a formulation plainly, so that a faster or differently organised
implementation can be checked against it:

- ``host_loop_updates``: FQL's training loop, one jitted update per call on a batch gathered on
  the host (the reference for the fused blocks of updates).
- The official agents' use of random keys, written in the official code's order and layout
  (flat ``B * n`` network calls, explicit loops): ``*_sample_actions`` say what "the same seed
  gives the same action" means, ``*_total_loss`` and ``official_update`` what "the same key gives
  the same update" means, metrics included.
- ``drol_actor_loss``: DROL's naive actor loss, which differentiates through all N*K candidates
  (the reference for the efficient winner-recompute form; the benchmark times it).

Agents are read only through ``agent.network.select(name)``, ``agent.network.params``,
``agent.config`` and ``agent.rng``, so the references also run on an agent with the official
train-state layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from drol_jax.data import gather, sample_indices

# ---------------------------------------------------------------------------------------------
# FQL's loop.


def host_loop_updates(
    agent, dataset: dict[str, np.ndarray], key, num_updates: int, batch_size: int
):
    """FQL-style loop: one jit call per update with a batch gathered on the host.

    Draws the same index stream as ``drol_jax.updates.make_train_block`` (a key split per
    update, then ``sample_indices``), so the two can be compared exactly. Returns the agent, the
    key and the list of per-update metric dicts.
    """
    size = len(dataset['observations'])
    infos = []
    for _ in range(num_updates):
        key, sample_key = jax.random.split(key)
        batch = gather(dataset, np.asarray(sample_indices(sample_key, size, batch_size)))
        agent, info = agent.update(batch)
        infos.append(info)
    return agent, key, infos


# ---------------------------------------------------------------------------------------------
# Shared by the official agents.


def reduce_ensemble(qs, how: str):
    """'min' or 'mean' over the ensemble axis (the official agents' if/else)."""
    return qs.min(axis=0) if how == 'min' else qs.mean(axis=0)


def critic_info(q, target_q):
    """The official critic loss and its metrics."""
    critic_loss = jnp.square(q - target_q).mean()
    return critic_loss, {
        'critic_loss': critic_loss,
        'q_mean': q.mean(),
        'q_max': q.max(),
        'q_min': q.min(),
    }


def official_update(agent, batch, total_loss):
    """One update as the official agents make it.

    ``total_loss(agent, batch, params, key) -> (loss, info)``. The key is the second half of the
    split agent key; the gradient statistics are the official ones; Adam steps all parameters;
    the target critic becomes ``tau * critic + (1 - tau) * target`` of the networks *before*
    the step. Returns ``(params, opt_state, rng, info)``.
    """
    new_rng, key = jax.random.split(agent.rng)
    network = agent.network
    grads, info = jax.grad(lambda p: total_loss(agent, batch, p, key), has_aux=True)(network.params)
    leaves = jax.tree_util.tree_leaves(grads)
    info = {
        **info,
        'grad/max': jnp.max(jnp.stack([g.max() for g in leaves])),
        'grad/min': jnp.min(jnp.stack([g.min() for g in leaves])),
        'grad/norm': jnp.linalg.norm(jnp.stack([jnp.linalg.norm(g) for g in leaves]), ord=1),
    }
    updates, opt_state = network.tx.update(grads, network.opt_state, network.params)
    params = optax.apply_updates(network.params, updates)
    tau = agent.config['tau']
    target = jax.tree_util.tree_map(
        lambda p, tp: p * tau + tp * (1 - tau),
        network.params['modules_critic'],
        network.params['modules_target_critic'],
    )
    return {**params, 'modules_target_critic': target}, opt_state, new_rng, info


def prefixed(critic, actor):
    """``critic/...`` and ``actor/...`` keys, as the official total losses log them."""
    return {
        **{f'critic/{k}': v for k, v in critic.items()},
        **{f'actor/{k}': v for k, v in actor.items()},
    }


# ---------------------------------------------------------------------------------------------
# DROL (official agents/drol.py).


def drol_prior(key, shape):
    """Uniform in the ball of radius sqrt(d), d = shape[-1], drawn as the official sampler does."""
    norm_key, radius_key = jax.random.split(key)
    dim = shape[-1]
    v = jax.random.normal(norm_key, shape)
    directions = v / (jnp.sqrt(jnp.sum(v**2, axis=-1, keepdims=True) + 1e-6) + 1e-8)
    u = jax.random.uniform(radius_key, shape[:-1] + (1,))
    radii = jnp.sqrt(jnp.asarray(dim, jnp.float32)) * (u ** (1.0 / (dim + 1e-8)))
    return radii * directions


def drol_single(agent, observations, seed):
    """One clipped action per state from one latent each."""
    noises = drol_prior(seed, (*observations.shape[:-1], agent.config['action_dim']))
    return jnp.clip(agent.network.select('actor_onestep_flow')(observations, noises), -1, 1)


def drol_candidates(agent, observations, seed, num):
    """``num`` clipped actions per state, ``(B, num, d)``, through one flat ``B * num`` pass."""
    batch, dim = observations.shape[0], agent.config['action_dim']
    noises = drol_prior(seed, (batch, num, dim))
    flat_obs = jnp.repeat(observations[:, None], num, axis=1).reshape(batch * num, -1)
    actions = agent.network.select('actor_onestep_flow')(flat_obs, noises.reshape(-1, dim))
    return jnp.clip(actions.reshape(batch, num, dim), -1, 1)


def drol_select(agent, observations, candidates, critic, q_agg):
    """The candidate ``(B, n, d)`` per state with the highest ``q_agg`` of ``critic``."""
    batch, num, dim = candidates.shape
    qs = agent.network.select(critic)(
        jnp.repeat(observations, num, axis=0), candidates.reshape(-1, dim)
    )
    best = jnp.argmax(reduce_ensemble(qs, q_agg).reshape(batch, num), axis=1)
    return candidates[jnp.arange(batch), best]


def drol_sample_actions(agent, observations, seed, temperature=1.0):
    """The official DROL ``sample_actions``: one latent, or best-of-N with the density filter."""
    del temperature
    config = agent.config
    num = config['inference_num_samples']
    if not config['inference_best_of_n'] or num <= 1:
        return drol_single(agent, observations, seed)
    unbatched = observations.ndim == 1
    observations = observations[None] if unbatched else observations
    candidates = drol_candidates(agent, observations, seed, num)
    if config['inference_use_density_filter']:
        pairwise = jnp.sum((candidates[:, :, None, :] - candidates[:, None, :, :]) ** 2, axis=-1)
        valid = 1.0 - jnp.eye(num)[None]
        mean_dist2 = jnp.sum(pairwise * valid, axis=-1) / jnp.maximum(valid.sum(axis=-1), 1.0)
        keep = max(min(int(config['inference_dense_topk']), num), 1)
        dense = jnp.argsort(mean_dist2, axis=1)[:, :keep]
        candidates = jnp.take_along_axis(candidates, dense[:, :, None], axis=1)
    best = drol_select(agent, observations, candidates, 'critic', config['inference_q_agg'])
    return best[0] if unbatched else best


def drol_critic_loss(agent, batch, params, key):
    """The official DROL critic loss (best-of-C next actions by the target critic if C > 1)."""
    config = agent.config
    _, sample_key = jax.random.split(key)
    next_observations = batch['next_observations']
    num_next = int(config['critic_num_candidates'])
    if num_next <= 1:
        next_actions = drol_single(agent, next_observations, sample_key)
    else:
        next_actions = drol_select(
            agent,
            next_observations,
            drol_candidates(agent, next_observations, sample_key, num_next),
            'target_critic',
            config['critic_selection_q_agg'],
        )
    next_qs = agent.network.select('target_critic')(next_observations, next_actions)
    next_q = reduce_ensemble(next_qs, config['q_agg'])
    target_q = batch['rewards'] + config['discount'] * batch['masks'] * next_q
    q = agent.network.select('critic')(batch['observations'], batch['actions'], params=params)
    return critic_info(q, target_q)


def drol_actor_loss(agent, batch, params, key, critic_on_all_candidates=True):
    """DROL's naive actor loss: gradients through all N*K clipped candidates, official metrics.

    ``critic_on_all_candidates``: score every candidate with the critic and take the winner's
    Q (the official formulation) instead of scoring only the winners; the loss is the same.
    """
    config = agent.config
    observations, actions = batch['observations'], batch['actions']
    batch_size, dim = actions.shape
    k = config['num_candidates']
    key, noise_key = jax.random.split(key)
    noises = drol_prior(noise_key, (batch_size, k, dim))
    flat_obs = jnp.repeat(observations[:, None], k, axis=1).reshape(batch_size * k, -1)
    actor = agent.network.select('actor_onestep_flow')
    candidates = actor(flat_obs, noises.reshape(-1, dim), params=params)
    candidates = jnp.clip(candidates.reshape(batch_size, k, dim), -1, 1)

    candidate_d2 = jnp.sum((candidates - actions[:, None, :]) ** 2, axis=-1)
    best = jnp.argmin(candidate_d2, axis=1)
    per_dim = candidate_d2 / dim
    rows = jnp.arange(batch_size)
    bc_loss = per_dim[rows, best].mean()

    frozen = jax.lax.stop_gradient(params)
    critic = agent.network.select('critic')
    if critic_on_all_candidates:
        qs = critic(flat_obs, candidates.reshape(-1, dim), params=frozen)
        q = reduce_ensemble(qs, config['actor_q_agg']).reshape(batch_size, k)[rows, best]
    else:
        q = reduce_ensemble(
            critic(observations, candidates[rows, best], params=frozen), config['actor_q_agg']
        )
    q_loss = -q.mean()
    if config['normalize_q_loss']:
        q_loss = q_loss * jax.lax.stop_gradient(1 / jnp.maximum(jnp.abs(q).mean(), 1e-6))
    actor_loss = config['bc_coef'] * bc_loss + config['q_coef'] * q_loss

    # The official metrics, each from its definition.
    pairwise = jnp.sum((candidates[:, :, None, :] - candidates[:, None, :, :]) ** 2, -1) / dim
    valid = 1.0 - jnp.eye(k)[None]
    pairwise_dist2 = (jnp.sum(pairwise * valid, axis=(1, 2)) / max(k * (k - 1), 1)).mean()
    center = candidates.mean(axis=1, keepdims=True)
    probs = jax.nn.one_hot(best, k).mean(axis=0)
    single = drol_single(agent, observations, key)
    return actor_loss, {
        'actor_loss': actor_loss,
        'bc_loss': bc_loss,
        'q_loss': q_loss,
        'q': q.mean(),
        'mse': jnp.mean((single - actions) ** 2),
        'gate': jnp.exp(-per_dim[rows, best] / 0.1).mean(),
        'min_d2': per_dim.min(axis=1).mean(),
        'candidate_divergence': jnp.mean(jnp.sum((candidates - center) ** 2, axis=-1) / dim),
        'candidate_pairwise_dist2': pairwise_dist2,
        'candidate_pairwise_dist': jnp.sqrt(jnp.maximum(pairwise_dist2, 0.0)),
        'best_idx_entropy': -jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-8))),
        'best_idx_max_prob': probs.max(),
    }


def drol_total_loss(agent, batch, params, key, critic_on_all_candidates=True):
    """The official DROL total loss: a three-way key split, critic + naive actor loss."""
    _, actor_key, critic_key = jax.random.split(key, 3)
    critic_loss, critic_metrics = drol_critic_loss(agent, batch, params, critic_key)
    actor_loss, actor_metrics = drol_actor_loss(
        agent, batch, params, actor_key, critic_on_all_candidates
    )
    return critic_loss + actor_loss, prefixed(critic_metrics, actor_metrics)


# ---------------------------------------------------------------------------------------------
# FQL (official agents/fql.py).


def fql_sample_actions(agent, observations, seed, temperature=1.0):
    """The official FQL ``sample_actions``: split the seed, noise from its first half."""
    del temperature
    action_seed, _ = jax.random.split(seed)
    noises = jax.random.normal(action_seed, (*observations.shape[:-1], agent.config['action_dim']))
    return jnp.clip(agent.network.select('actor_onestep_flow')(observations, noises), -1, 1)


def fql_flow_actions(agent, observations, noises):
    """Euler integration of the BC flow, one explicit step after another, clipped."""
    steps = agent.config['flow_steps']
    actions = noises
    for i in range(steps):
        t = jnp.full((*observations.shape[:-1], 1), i / steps)
        actions = actions + agent.network.select('actor_bc_flow')(observations, actions, t) / steps
    return jnp.clip(actions, -1, 1)


def fql_total_loss(agent, batch, params, key):
    """The official FQL total loss, metrics included."""
    config = agent.config
    observations, actions = batch['observations'], batch['actions']
    batch_size, dim = actions.shape
    _, actor_key, critic_key = jax.random.split(key, 3)

    _, sample_key = jax.random.split(critic_key)
    next_actions = fql_sample_actions(agent, batch['next_observations'], sample_key)
    next_qs = agent.network.select('target_critic')(batch['next_observations'], next_actions)
    target_q = batch['rewards'] + config['discount'] * batch['masks'] * reduce_ensemble(
        next_qs, config['q_agg']
    )
    q = agent.network.select('critic')(observations, actions, params=params)
    critic_loss, critic_metrics = critic_info(q, target_q)

    actor_key, x_key, t_key = jax.random.split(actor_key, 3)
    x_0 = jax.random.normal(x_key, (batch_size, dim))
    t = jax.random.uniform(t_key, (batch_size, 1))
    x_t = (1 - t) * x_0 + t * actions
    pred = agent.network.select('actor_bc_flow')(observations, x_t, t, params=params)
    bc_flow_loss = jnp.mean((pred - (actions - x_0)) ** 2)
    actor_key, noise_key = jax.random.split(actor_key)
    noises = jax.random.normal(noise_key, (batch_size, dim))
    teacher = fql_flow_actions(agent, observations, noises)
    student = agent.network.select('actor_onestep_flow')(observations, noises, params=params)
    distill_loss = jnp.mean((student - teacher) ** 2)
    qs = agent.network.select('critic')(
        observations, jnp.clip(student, -1, 1), params=jax.lax.stop_gradient(params)
    )
    q_actor = qs.mean(axis=0)
    q_loss = -q_actor.mean()
    if config['normalize_q_loss']:
        q_loss = q_loss * jax.lax.stop_gradient(1 / jnp.abs(q_actor).mean())
    actor_loss = bc_flow_loss + config['alpha'] * distill_loss + q_loss
    sampled = fql_sample_actions(agent, observations, actor_key)
    actor_metrics = {
        'actor_loss': actor_loss,
        'bc_flow_loss': bc_flow_loss,
        'distill_loss': distill_loss,
        'q_loss': q_loss,
        'q': q_actor.mean(),
        'mse': jnp.mean((sampled - actions) ** 2),
    }
    return critic_loss + actor_loss, prefixed(critic_metrics, actor_metrics)


# ---------------------------------------------------------------------------------------------
# By agent name: the official seed handling of ``sample_actions`` and the official total loss.
# A new agent file joins the tests that use them with one line in each table.

OFFICIAL_SAMPLE_ACTIONS = {'drol': drol_sample_actions, 'fql': fql_sample_actions}
OFFICIAL_TOTAL_LOSS = {'drol': drol_total_loss, 'fql': fql_total_loss}
