"""Loss pieces that several agents share: the critic's TD loss and metric prefixes."""

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
