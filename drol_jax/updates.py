"""Compiled blocks of updates on device-resident data, and several seeds in one process.

A block runs ``num_updates`` updates inside one ``lax.fori_loop`` (the length is traced, so
blocks of any length share one compiled program); each update draws its batch on the device from
the data already there (a gather of transitions, or for image data the frame stacks and crops of
``drol_jax.frames``), so there is no host work per update.
Several seeds train together with ``jax.vmap`` over agent states stacked on a leading axis,
sharded over the local devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from drol_jax.data import gather, sample_indices


def stack_agents(agents: list) -> Any:
    """Stack per-seed agent pytrees along a new leading seed axis.

    Agents built separately carry equal but distinct static parts (e.g. their optimizer
    objects), so the leaves are stacked under the first agent's tree structure.
    """
    treedef = jax.tree_util.tree_structure(agents[0])
    leaves = [jax.tree_util.tree_leaves(agent) for agent in agents]
    return treedef.unflatten([jnp.stack(xs) for xs in zip(*leaves, strict=True)])


def seed_mesh(num_seeds: int) -> jax.sharding.Mesh:
    """A 1-D device mesh (axis 'seed') over up to ``num_seeds`` local devices.

    On a host with 8 GPUs and 32 seeds each device trains 4 seeds; one seed uses one device.
    """
    devices = jax.local_devices()[:num_seeds]
    return jax.sharding.Mesh(np.array(devices), ('seed',))


def pad_seeds(tree, num_slots: int):
    """Repeat the last seed until the leading axis has ``num_slots`` entries.

    Lets 3 seeds shard over 2 devices (4 slots); the padding slot's results are discarded.
    """

    def pad(x):
        extra = num_slots - x.shape[0]
        return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) if extra else x

    return jax.tree_util.tree_map(pad, tree)


def shard_over_seeds(tree, mesh: jax.sharding.Mesh):
    """Split a seed-stacked pytree's leading axis over the mesh (the update block follows it)."""
    spec = jax.sharding.PartitionSpec('seed')
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))


def replicate(tree, mesh: jax.sharding.Mesh):
    """Put a full copy of a pytree (the training data) on every device of the mesh."""
    spec = jax.sharding.PartitionSpec()
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))


def unstack_agent(agents, index: int):
    """One seed's agent from a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[index], agents)


@jax.jit
def validation_info(agents, index, batch) -> dict[str, jax.Array]:
    """The metrics of seed ``index``'s ``total_loss`` on ``batch``: FQL's validation losses.

    FQL evaluates this loss op by op; compiled (once per process for an agent's structure, the
    seed index traced), it costs about what one update does.
    """
    agent = unstack_agent(agents, index)
    return agent.total_loss(batch, grad_params=agent.network.params)[1]


class BlockResult(NamedTuple):
    """What one compiled block of updates returns, per seed (leading axis)."""

    agents: Any
    keys: jax.Array
    last_info: dict[str, jax.Array]  # The last update's metrics (what FQL logs).
    first_bad: dict[str, jax.Array]  # Per metric, the first update that made it NaN/inf, or -1.


def sample_transitions(data: dict, key: jax.Array, batch_size: int) -> dict:
    """A uniform batch of a dict of transition arrays: the state data's sampler."""
    return gather(data, sample_indices(key, data['observations'].shape[0], batch_size))


Sampler = Callable[[Any, jax.Array, int], dict]  # (data, key, batch_size) -> batch, jittable.


def make_train_block(
    batch_size: int, sample: Sampler = sample_transitions
) -> Callable[..., BlockResult]:
    """A compiled ``(agents, keys, data, num_updates) -> BlockResult``.

    Per seed, each update draws its batch on the device with ``sample(data, key, batch_size)``
    from that seed's sampling key and the device-resident data: no host work per update.
    ``num_updates`` is traced, so blocks of any length share one compiled program. The carry
    keeps the last update's metrics (what FQL logs) and, per metric, the index of the first
    update that made it non-finite (-1 if none).
    """

    def train_block(agents, keys, data, num_updates):
        def one_seed(agent, key):
            def update(agent, key):
                key, sample_key = jax.random.split(key)
                agent, info = agent.update(sample(data, sample_key, batch_size))
                return agent, key, info

            info_shapes = jax.eval_shape(update, agent, key)[2]
            last_info = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), info_shapes)
            first_bad = jax.tree_util.tree_map(lambda _: jnp.int32(-1), info_shapes)

            def body(i, carry):
                agent, key, _, first_bad = carry
                agent, key, info = update(agent, key)
                first_bad = jax.tree_util.tree_map(
                    lambda b, v: jnp.where((b < 0) & ~jnp.all(jnp.isfinite(v)), i, b),
                    first_bad,
                    info,
                )
                return agent, key, info, first_bad

            return BlockResult(
                *jax.lax.fori_loop(0, num_updates, body, (agent, key, last_info, first_bad))
            )

        if keys.shape[0] == 1:
            # One seed runs unbatched: under vmap a size-1 seed axis turns every dense layer into
            # a batched dot and XLA:CPU transposes the weights at every update (about 25% slower,
            # bench/RESULTS.md). Same numbers, same output shapes.
            return jax.tree_util.tree_map(
                lambda x: x[None], one_seed(unstack_agent(agents, 0), keys[0])
            )
        return jax.vmap(one_seed)(agents, keys)

    return jax.jit(train_block, donate_argnums=(0, 1))


def first_nonfinite(first_bad: dict[str, np.ndarray]) -> tuple[str, int, int] | None:
    """(metric, seed index, update index in block) of the earliest NaN/inf metric, or None."""
    worst = None
    for name, per_seed in first_bad.items():
        for seed_index, update in enumerate(np.asarray(per_seed)):
            if update >= 0 and (worst is None or update < worst[2]):
                worst = (name, seed_index, int(update))
    return worst
