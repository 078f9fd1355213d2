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

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from drol_jax.data import gather, sample_indices

# ---------------------------------------------------------------------------------------------
# FQL's loop.


def host_gather(dataset: dict[str, np.ndarray], key, batch_size: int) -> dict:
    """The state data's batch gathered on the host, from the indices the device would draw."""
    size = len(dataset['observations'])
    return gather(dataset, np.asarray(sample_indices(key, size, batch_size)))


def host_loop_updates(agent, dataset, key, num_updates: int, batch_size: int, sample=host_gather):
    """FQL-style loop: one jit call per update with a batch built on the host.

    Draws the same batches as ``drol_jax.updates.make_train_block`` with the same ``sample``
    (a key split per update, then ``sample(dataset, key, batch_size)``; for image data
    ``drol_jax.frames.sample_batch`` on a host ``FrameDataset``), so the two can be compared
    exactly. Returns the agent, the key and the list of per-update metric dicts.
    """
    infos = []
    for _ in range(num_updates):
        key, sample_key = jax.random.split(key)
        batch = sample(dataset, sample_key, batch_size)
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


def official_update(agent, batch, total_loss, targets=('critic',)):
    """One update as the official agents make it.

    ``total_loss(agent, batch, params, key) -> (loss, info)``. The key is the second half of the
    split agent key; the gradient statistics are the official ones; Adam steps all parameters;
    each of ``targets`` (``'critic'`` -> ``modules_target_critic``) becomes
    ``tau * online + (1 - tau) * target`` of the networks *before* the step. Returns
    ``(params, opt_state, rng, info)``.
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
    params = dict(optax.apply_updates(network.params, updates))
    tau = agent.config['tau']
    for name in targets:
        params[f'modules_target_{name}'] = jax.tree_util.tree_map(
            lambda p, tp: p * tau + tp * (1 - tau),
            network.params[f'modules_{name}'],
            network.params[f'modules_target_{name}'],
        )
    return params, opt_state, new_rng, info


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
# The Gaussian actors (official utils/networks.py ``Actor``) and the implicit value learning of
# IQL and IFQL.


def gaussian_sample(agent, observations, seed, temperature=1.0):
    """A sample of the official ``Actor``'s distribution from ``seed``, drawn as distrax does.

    The seed is used as it is (no split): one standard normal draw of the action shape, scaled
    by the std times ``temperature``, shifted by the mean, then tanh if the actor squashes.
    """
    dist = agent.network.select('actor')(observations, temperature=temperature)
    gaussian = unsquashed(dist)
    eps = jax.random.normal(seed, gaussian.loc.shape)
    sample = gaussian.loc + gaussian.scale_diag * eps
    return sample if gaussian is dist else jnp.tanh(sample)


def unsquashed(dist):
    """The diagonal Gaussian of an ``Actor`` distribution, under its tanh squash if it has one
    (the official ``dist._distribution``)."""
    return dist if isinstance(dist, distrax.MultivariateNormalDiag) else dist.distribution


def implicit_losses(agent, batch, params):
    """The official IQL/IFQL value and critic losses and their metrics.

    Returns ``(value_loss, value_metrics, critic_loss, critic_metrics)``; the critics' metrics
    describe the target ``r + discount * mask * V(s')``, as the official ones do.
    """
    config = agent.config
    observations, actions = batch['observations'], batch['actions']
    q1, q2 = agent.network.select('target_critic')(observations, actions)
    q = jnp.minimum(q1, q2)
    v = agent.network.select('value')(observations, params=params)
    weight = jnp.where(q - v >= 0, config['expectile'], 1 - config['expectile'])
    value_loss = (weight * (q - v) ** 2).mean()
    value_metrics = {
        'value_loss': value_loss,
        'v_mean': v.mean(),
        'v_max': v.max(),
        'v_min': v.min(),
    }

    next_v = agent.network.select('value')(batch['next_observations'])
    target = batch['rewards'] + config['discount'] * batch['masks'] * next_v
    q1, q2 = agent.network.select('critic')(observations, actions, params=params)
    critic_loss = ((q1 - target) ** 2 + (q2 - target) ** 2).mean()
    critic_metrics = {
        'critic_loss': critic_loss,
        'q_mean': target.mean(),
        'q_max': target.max(),
        'q_min': target.min(),
    }
    return value_loss, value_metrics, critic_loss, critic_metrics


# ---------------------------------------------------------------------------------------------
# IQL (official agents/iql.py).


def iql_sample_actions(agent, observations, seed, temperature=1.0):
    """The official IQL ``sample_actions``: the actor's sample from ``seed``, clipped."""
    return jnp.clip(gaussian_sample(agent, observations, seed, temperature), -1, 1)


def iql_actor_loss(agent, batch, params, key):
    """The official AWR or DDPG+BC actor loss and its metrics."""
    config = agent.config
    observations, actions = batch['observations'], batch['actions']
    dist = agent.network.select('actor')(observations, params=params)
    log_prob = dist.log_prob(actions)
    metrics = {
        'bc_log_prob': log_prob.mean(),
        'mse': jnp.mean((dist.mode() - actions) ** 2),
        'std': jnp.mean(dist.scale_diag),
    }
    if config['actor_loss'] == 'awr':
        v = agent.network.select('value')(observations)
        q1, q2 = agent.network.select('critic')(observations, actions)
        adv = jnp.minimum(q1, q2) - v
        exp_a = jnp.minimum(jnp.exp(adv * config['alpha']), 100.0)
        actor_loss = -(exp_a * log_prob).mean()
        return actor_loss, {'actor_loss': actor_loss, 'adv': adv.mean(), **metrics}
    if config['const_std']:
        q_actions = jnp.clip(dist.mode(), -1, 1)
    else:
        q_actions = jnp.clip(dist.sample(seed=key), -1, 1)
    q1, q2 = agent.network.select('critic')(observations, q_actions)
    q = jnp.minimum(q1, q2)
    q_loss = -q.mean() / jax.lax.stop_gradient(jnp.abs(q).mean())
    bc_loss = -(config['alpha'] * log_prob).mean()
    actor_loss = q_loss + bc_loss
    return actor_loss, {
        'actor_loss': actor_loss,
        'q_loss': q_loss,
        'bc_loss': bc_loss,
        'q_mean': q.mean(),
        'q_abs_mean': jnp.abs(q).mean(),
        **metrics,
    }


def iql_total_loss(agent, batch, params, key):
    """The official IQL total loss: value, critic, then the actor on the split key's second half."""
    value_loss, value_metrics, critic_loss, critic_metrics = implicit_losses(agent, batch, params)
    _, actor_key = jax.random.split(key)
    actor_loss, actor_metrics = iql_actor_loss(agent, batch, params, actor_key)
    info = {
        **{f'value/{k}': v for k, v in value_metrics.items()},
        **prefixed(critic_metrics, actor_metrics),
    }
    return value_loss + critic_loss + actor_loss, info


# ---------------------------------------------------------------------------------------------
# ReBRAC (official agents/rebrac.py).


def rebrac_sample_actions(agent, observations, seed, temperature=1.0):
    """The official ReBRAC ``sample_actions``: ``mu(s)`` plus clipped noise times temperature."""
    config = agent.config
    actions = agent.network.select('actor')(observations, temperature=temperature).mode()
    noise = jnp.clip(
        jax.random.normal(seed, actions.shape) * config['actor_noise'] * temperature,
        -config['actor_noise_clip'],
        config['actor_noise_clip'],
    )
    return jnp.clip(actions + noise, -1, 1)


def rebrac_total_loss(agent, batch, params, key, full_update=True):
    """The official ReBRAC total loss; without ``full_update`` the actor's part (and its
    metrics) is left out, as the official agent leaves it out."""
    config = agent.config
    _, _, critic_key = jax.random.split(key, 3)
    _, sample_key = jax.random.split(critic_key)
    next_observations = batch['next_observations']
    next_actions = agent.network.select('target_actor')(next_observations).mode()
    noise = jnp.clip(
        jax.random.normal(sample_key, next_actions.shape) * config['actor_noise'],
        -config['actor_noise_clip'],
        config['actor_noise_clip'],
    )
    next_actions = jnp.clip(next_actions + noise, -1, 1)
    next_q = agent.network.select('target_critic')(next_observations, next_actions).min(axis=0)
    next_q = next_q - config['alpha_critic'] * jnp.square(next_actions - batch['next_actions']).sum(
        axis=-1
    )
    target_q = batch['rewards'] + config['discount'] * batch['masks'] * next_q
    q = agent.network.select('critic')(batch['observations'], batch['actions'], params=params)
    critic_loss, critic_metrics = critic_info(q, target_q)
    if not full_update:
        return critic_loss, prefixed(critic_metrics, {})

    dist = agent.network.select('actor')(batch['observations'], params=params)
    actions = dist.mode()
    q = agent.network.select('critic')(batch['observations'], actions).min(axis=0)
    mse = jnp.square(actions - batch['actions']).sum(axis=-1)
    q_loss = -(jax.lax.stop_gradient(1 / jnp.abs(q).mean()) * q).mean()
    bc_loss = (config['alpha_actor'] * mse).mean()
    actor_metrics = {
        'total_loss': q_loss + bc_loss,
        'actor_loss': q_loss,
        'bc_loss': bc_loss,
        'std': unsquashed(dist).stddev().mean(),
        'mse': mse.mean(),
    }
    return critic_loss + q_loss + bc_loss, prefixed(critic_metrics, actor_metrics)


def rebrac_update(agent, batch, completed):
    """Update number ``completed + 1`` of the official loop, which calls
    ``update(batch, full_update=(i % actor_freq == 0))`` for update ``i`` (from 1); the target
    networks move on full updates only."""
    full_update = (completed + 1) % agent.config['actor_freq'] == 0
    return official_update(
        agent,
        batch,
        lambda a, b, p, k: rebrac_total_loss(a, b, p, k, full_update),
        targets=('critic', 'actor') if full_update else (),
    )


# ---------------------------------------------------------------------------------------------
# IFQL (official agents/ifql.py).


def ifql_best_of_n(agent, observation, noises):
    """The official IFQL inference for one observation from its ``(N, d)`` initial noises."""
    config = agent.config
    num, steps = noises.shape[0], config['flow_steps']
    states = jnp.repeat(observation[None], num, axis=0)
    actions = noises
    for i in range(steps):
        t = jnp.full((num, 1), i / steps)
        actions = actions + agent.network.select('actor_flow')(states, actions, t) / steps
    actions = jnp.clip(actions, -1, 1)
    q = agent.network.select('critic')(states, actions).min(axis=0)
    return actions[jnp.argmax(q)]


def ifql_sample_actions(agent, observations, seed, temperature=1.0):
    """The official IFQL ``sample_actions``: noise from the first half of the split seed.

    The official agent takes one observation (the noise has shape ``(*obs.shape[:-1], N, d)``);
    on a batch, each observation runs those steps on its own row of that noise (``vmap``).
    """
    del temperature
    config = agent.config
    noise_seed, _ = jax.random.split(seed)
    noises = jax.random.normal(
        noise_seed, (*observations.shape[:-1], config['num_samples'], config['action_dim'])
    )
    if observations.ndim == 1:
        return ifql_best_of_n(agent, observations, noises)
    return jax.vmap(lambda o, n: ifql_best_of_n(agent, o, n))(observations, noises)


def ifql_total_loss(agent, batch, params, key):
    """The official IFQL total loss: IQL's value and critic, then flow-matching BC."""
    value_loss, value_metrics, critic_loss, critic_metrics = implicit_losses(agent, batch, params)
    _, actor_key = jax.random.split(key)
    batch_size, dim = batch['actions'].shape
    _, x_key, t_key = jax.random.split(actor_key, 3)
    x_0 = jax.random.normal(x_key, (batch_size, dim))
    t = jax.random.uniform(t_key, (batch_size, 1))
    x_t = (1 - t) * x_0 + t * batch['actions']
    pred = agent.network.select('actor_flow')(batch['observations'], x_t, t, params=params)
    actor_loss = jnp.mean((pred - (batch['actions'] - x_0)) ** 2)
    info = {
        **{f'value/{k}': v for k, v in value_metrics.items()},
        **prefixed(critic_metrics, {'actor_loss': actor_loss}),
    }
    return value_loss + critic_loss + actor_loss, info


# ---------------------------------------------------------------------------------------------
# SAC (official agents/sac.py).


def sac_sample_actions(agent, observations, seed, temperature=1.0):
    """The official SAC ``sample_actions``: the tanh-Gaussian's sample from ``seed``, clipped."""
    return jnp.clip(gaussian_sample(agent, observations, seed, temperature), -1, 1)


def sac_total_loss(agent, batch, params, key):
    """The official SAC total loss: critic (optional entropy backup), actor and dual alpha."""
    config = agent.config
    observations = batch['observations']
    _, actor_key, critic_key = jax.random.split(key, 3)
    alpha = agent.network.select('alpha')

    _, sample_key = jax.random.split(critic_key)
    next_dist = agent.network.select('actor')(batch['next_observations'])
    next_actions, next_log_probs = next_dist.sample_and_log_prob(seed=sample_key)
    next_qs = agent.network.select('target_critic')(batch['next_observations'], next_actions)
    target_q = batch['rewards'] + config['discount'] * batch['masks'] * reduce_ensemble(
        next_qs, config['q_agg']
    )
    if config['backup_entropy']:
        target_q = target_q - config['discount'] * batch['masks'] * next_log_probs * alpha()
    q = agent.network.select('critic')(observations, batch['actions'], params=params)
    critic_loss, critic_metrics = critic_info(q, target_q)

    dist = agent.network.select('actor')(observations, params=params)
    actions, log_probs = dist.sample_and_log_prob(seed=actor_key)
    q_actor = agent.network.select('critic')(observations, actions).mean(axis=0)
    policy_loss = (log_probs * alpha() - q_actor).mean()
    alpha_value = alpha(params=params)
    entropy = -jax.lax.stop_gradient(log_probs).mean()
    alpha_loss = (alpha_value * (entropy - config['target_entropy'])).mean()
    actor_metrics = {
        'total_loss': policy_loss + alpha_loss,
        'actor_loss': policy_loss,
        'alpha_loss': alpha_loss,
        'alpha': alpha_value,
        'entropy': -log_probs.mean(),
        'std': unsquashed(dist).stddev().mean(),
        'q': q_actor.mean(),
    }
    return critic_loss + policy_loss + alpha_loss, prefixed(critic_metrics, actor_metrics)


# ---------------------------------------------------------------------------------------------
# By agent name: the official seed handling of ``sample_actions`` and the official total loss.
# A new agent file joins the tests that use them with one line in each table.


def official_loop_update(agent, batch, name: str, completed: int = 0):
    """Update number ``completed + 1`` of the official loop for the agent named ``name``.

    Returns ``(params, opt_state, rng, info)``. Every agent's update is ``official_update`` of
    its total loss, except where the update depends on the step (``OFFICIAL_STEP_UPDATES``).
    """
    if name in OFFICIAL_STEP_UPDATES:
        return OFFICIAL_STEP_UPDATES[name](agent, batch, completed)
    return official_update(agent, batch, OFFICIAL_TOTAL_LOSS[name])


OFFICIAL_SAMPLE_ACTIONS = {
    'drol': drol_sample_actions,
    'fql': fql_sample_actions,
    'iql': iql_sample_actions,
    'rebrac': rebrac_sample_actions,
    'ifql': ifql_sample_actions,
    'sac': sac_sample_actions,
}
OFFICIAL_TOTAL_LOSS = {
    'drol': drol_total_loss,
    'fql': fql_total_loss,
    'iql': iql_total_loss,
    'rebrac': rebrac_total_loss,
    'ifql': ifql_total_loss,
    'sac': sac_total_loss,
}
# Agents whose official update depends on the loop's update count: ``(agent, batch, completed)``.
OFFICIAL_STEP_UPDATES = {'rebrac': rebrac_update}
