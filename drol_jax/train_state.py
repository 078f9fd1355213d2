"""A train state over a dict of modules: one optimizer for all parameters, target EMA.

The layout is FQL's (``TrainState`` with ``step``, ``params``, ``opt_state``; modules stored as
``modules_<name>``), so ``flax.serialization.to_state_dict`` of an agent matches the official
agents' checkpoints.

Agents keep every network (actor, critic, target critic, ...) in one ``ModuleDict`` so that the
whole agent is a single parameter tree updated by a single optimizer, and call a submodule
with ``state.select('critic')(obs, actions, params=...)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Params = Any


def nonpytree_field():
    """A dataclass field that is static (not a leaf), e.g. an agent's config."""
    return flax.struct.field(pytree_node=False)


class ModuleDict(nn.Module):
    """Several named modules under one parameter tree.

    Initialisation (``name=None``) runs every module on its example inputs; afterwards
    ``name`` picks the module to apply.
    """

    modules: dict[str, nn.Module]

    @nn.compact
    def __call__(self, *args, name: str | None = None, **kwargs):
        """Run one named module, or (at init) every module on ``kwargs[name]`` inputs."""
        if name is None:
            return {key: module(*kwargs[key]) for key, module in self.modules.items()}
        return self.modules[name](*args, **kwargs)


class TrainState(flax.struct.PyTreeNode):
    """Parameters, optimizer state and step of a ``ModuleDict``."""

    step: jnp.ndarray
    params: Params
    opt_state: Any
    apply_fn: Callable = nonpytree_field()
    tx: optax.GradientTransformation = nonpytree_field()

    @classmethod
    def create(cls, model_def: nn.Module, params: Params, tx: optax.GradientTransformation):
        """Wrap freshly initialised parameters with an optimizer."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            apply_fn=model_def.apply,
            params=params,
            tx=tx,
            opt_state=tx.init(params),
        )

    def __call__(self, *args, params: Params = None, name: str | None = None, **kwargs):
        """Apply the module dict with ``params`` (default: the current parameters)."""
        params = self.params if params is None else params
        return self.apply_fn({'params': params}, *args, name=name, **kwargs)

    def select(self, name: str) -> Callable:
        """The named submodule as a function ``f(*inputs, params=None)``."""
        return functools.partial(self, name=name)

    def apply_loss_fn(self, loss_fn: Callable[[Params], tuple[jnp.ndarray, dict]]):
        """One optimizer step on ``loss_fn(params) -> (loss, info)``; adds gradient statistics.

        The statistics are the official agents': ``grad/max`` and ``grad/min`` over every
        gradient entry, and ``grad/norm``, the sum over parameter arrays of each array's L2 norm
        (not the global L2 norm), so logs compare one to one with theirs.
        """
        grads, info = jax.grad(loss_fn, has_aux=True)(self.params)
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        leaves = jax.tree_util.tree_leaves(grads)
        info = {
            **info,
            'grad/max': jnp.max(jnp.stack([g.max() for g in leaves])),
            'grad/min': jnp.min(jnp.stack([g.min() for g in leaves])),
            'grad/norm': jnp.sum(jnp.stack([jnp.linalg.norm(g) for g in leaves])),
        }
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state), info


def target_update(
    state: TrainState, previous: TrainState, module_name: str, tau: float
) -> TrainState:
    """``state`` with ``target_<module_name>`` set to a Polyak average of ``previous``'s networks.

    ``target <- tau * online + (1 - tau) * target``, every update, where ``previous`` is the
    train state before the gradient step that produced ``state``. The official agents average
    the online network as it was before the step (so the target trails it by one update); both
    networks are taken from ``previous`` to give exactly their update.
    """
    online = previous.params[f'modules_{module_name}']
    target = previous.params[f'modules_target_{module_name}']
    averaged = jax.tree_util.tree_map(lambda o, t: tau * o + (1 - tau) * t, online, target)
    return state.replace(params={**state.params, f'modules_target_{module_name}': averaged})
