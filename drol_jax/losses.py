"""Loss pieces several agents share (TD, expectile value, flow matching) and metric prefixes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def td_loss(
    q: jax.Array, rewards: jax.Array, masks: jax.Array, next_q: jax.Array, discount: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean squared TD error of an ensemble against ``r + discount * mask * next_q``.

    Args:
        q: ``(E, N)`` Q-values of the dataset actions, one row per ensemble member.
        rewards: ``(N,)`` rewards.
        masks: ``(N,)`` 0 where the episode terminated (no bootstrap), else 1.
        next_q: ``(N,)`` aggregated target-critic values of the next actions; no gradient flows
            into it (the caller computes it from the target critic).
        discount: the discount factor.

    Returns:
        The loss (mean over members and transitions) and FQL's critic diagnostics.
    """
    target = rewards + discount * masks * jax.lax.stop_gradient(next_q)
    loss = jnp.mean((q - target) ** 2)
    return loss, {
        'critic_loss': loss,
        'q_mean': q.mean(),
        'q_max': q.max(),
        'q_min': q.min(),
        'target_mean': target.mean(),
    }


def prefixed(**groups: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Merge metric dicts under ``<group>/<name>`` keys (``critic/q_mean``, ``actor/bc_loss``)."""
    return {
        f'{group}/{name}': value for group, info in groups.items() for name, value in info.items()
    }


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """Elementwise expectile regression loss ``|expectile - 1(diff < 0)| * diff**2``.

    Fitting ``v`` to ``q`` with ``diff = q - v`` and ``expectile > 0.5`` weighs targets above the
    estimate more, so ``v`` tracks an upper expectile of ``q`` (Kostrikov et al. 2022).
    """
    weight = jnp.where(diff >= 0, expectile, 1 - expectile)
    return weight * diff**2


def expectile_value_loss(
    q: jax.Array, v: jax.Array, expectile: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Implicit value loss: ``V(s)`` regressed on the target critics' ``Q(s, a)`` by expectile.

    Args:
        q: ``(N,)`` target-critic values of the dataset actions (min over the ensemble); no
            gradient flows into them.
        v: ``(N,)`` state values being fitted.
        expectile: the expectile (0.5 is the mean).

    Returns:
        The mean loss and the value diagnostics.
    """
    loss = expectile_loss(jax.lax.stop_gradient(q) - v, expectile).mean()
    return loss, {'value_loss': loss, 'v_mean': v.mean(), 'v_max': v.max(), 'v_min': v.min()}


def value_td_loss(
    q: jax.Array, rewards: jax.Array, masks: jax.Array, next_v: jax.Array, discount: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Critic loss against ``r + discount * mask * V(s')``, summed over ensemble members.

    Each member's squared error is summed (not averaged) over the ensemble and averaged over the
    batch; the diagnostics describe the target.

    Args:
        q: ``(E, N)`` Q-values of the dataset actions.
        rewards: ``(N,)`` rewards.
        masks: ``(N,)`` 0 where the episode terminated, else 1.
        next_v: ``(N,)`` state values of the next observations; no gradient flows into them.
        discount: the discount factor.
    """
    target = rewards + discount * masks * jax.lax.stop_gradient(next_v)
    loss = jnp.sum((q - target) ** 2, axis=0).mean()
    return loss, {
        'critic_loss': loss,
        'q_mean': target.mean(),
        'q_max': target.max(),
        'q_min': target.min(),
    }


def flow_matching_loss(velocity, actions: jax.Array, noise_key: jax.Array, time_key: jax.Array):
    """Flow-matching behaviour cloning on the straight path from ``x_0 ~ N(0, I)`` to ``a``.

    ``velocity(x_t, t)`` is the vector field being trained; the loss is the mean squared error to
    ``a - x_0`` at ``x_t = (1 - t) x_0 + t a`` with ``t ~ U(0, 1)`` per transition.
    """
    x_0 = jax.random.normal(noise_key, actions.shape)
    t = jax.random.uniform(time_key, (*actions.shape[:-1], 1))
    x_t = (1 - t) * x_0 + t * actions
    return jnp.mean((velocity(x_t, t) - (actions - x_0)) ** 2)


def implicit_value_losses(network, batch, grad_params, expectile: float, discount: float):
    """Implicit value learning: the value and critic losses of a state value and a critic.

    ``network`` is a train state with ``value``, ``critic`` and ``target_critic`` modules.
    ``V(s)`` is fitted by ``expectile_value_loss`` to the target critics' min Q of the dataset
    action, and the critics by ``value_td_loss`` to ``r + discount * mask * V(s')``; only the
    online value and critic receive gradients (through ``grad_params``).

    Returns:
        ``((value_loss, value_info), (critic_loss, critic_info))``.
    """
    observations, actions = batch['observations'], batch['actions']
    target_q = network.select('target_critic')(observations, actions).min(axis=0)
    v = network.select('value')(observations, params=grad_params)
    next_v = network.select('value')(batch['next_observations'])
    q = network.select('critic')(observations, actions, params=grad_params)
    return (
        expectile_value_loss(target_q, v, expectile),
        value_td_loss(q, batch['rewards'], batch['masks'], next_v, discount),
    )
