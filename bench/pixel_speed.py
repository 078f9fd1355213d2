"""Cost of frame stacking and augmentation: FQL's host path against the on-device path.

Rows (a batch of ``--batch`` transitions, 64x64x3 frames, ``--frame_stack`` frames, crop with
padding 3 applied to every batch, i.e. the cost of an augmented batch):

  host-numpy     FQL's path on the host: stack by fancy indexing into separate observation
                 and next-observation arrays, crop in numpy, then copy the batch to the device
                 (``tests/pixel_reference.py``);
  host-official  as host-numpy, but the crop as FQL runs it: a jitted jax crop whose result
                 comes back to numpy before the batch is copied to the device;
  device-call    ``drol_jax.frames.sample_batch`` jitted, one call per batch, frames stored once
                 on the device;
  device-block   the same inside a compiled loop of batches (as in the fused update block);
  update         one DROL(16) update with impala_small encoders on a fixed device batch, inside
                 a compiled loop of updates (``agents/drol.py``'s loss, with encoders);
  update+sample  the same loop drawing every batch with ``sample_batch`` inside it (p_aug 0.5:
                 the crop runs on every batch, at the identity offset when not augmenting).

The ratios compare rows of one run (interleaved repetitions, so every row sees the same load).

    python bench/pixel_speed.py                 # batch 256, frame stack 3, impala_small
    python bench/pixel_speed.py --quick         # smoke run: impala_debug, batch 32

Meant for an accelerator: on a 2-core CPU one impala_small update at batch 256 takes tens of
seconds (about 12 s per encoder gradient on a busy machine), and the default run over an hour.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from pixel_reference import reference_batch, reference_sample  # noqa: E402

from agents import drol  # noqa: E402
from drol_jax import frames  # noqa: E402
from drol_jax.analysis.runtime import machine_description  # noqa: E402
from drol_jax.encoders import make_encoder  # noqa: E402
from drol_jax.networks import ConditionedPolicy, EnsembleCritic  # noqa: E402
from drol_jax.train_state import ModuleDict, TrainState  # noqa: E402

ACTION_DIM = 5
FRAME_SHAPE = (64, 64, 3)


def stored_dataset(episodes: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random frames in OGBench's compact layout (values do not change the timings)."""
    rng = np.random.default_rng(seed)
    num_frames = episodes * (steps + 1)
    valids = np.ones(num_frames, np.float32)
    valids[steps :: steps + 1] = 0.0  # Each episode's last frame starts no transition.
    terminals = np.zeros(num_frames, np.float32)
    terminals[steps - 1 :: steps + 1] = 1.0
    return {
        'observations': rng.integers(0, 256, (num_frames, *FRAME_SHAPE), dtype=np.uint8),
        'actions': rng.uniform(-1, 1, (num_frames, ACTION_DIM)).astype(np.float32),
        'rewards': rng.standard_normal(num_frames).astype(np.float32),
        'masks': np.ones(num_frames, np.float32),
        'terminals': terminals,
        'valids': valids,
    }


def regular_layout(compact: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same data as FQL holds it: separate observation and next-observation arrays."""
    valid = np.flatnonzero(compact['valids'] > 0)
    dataset = {k: compact[k][valid] for k in frames.TRANSITION_KEYS}
    dataset['observations'] = compact['observations'][valid]
    dataset['next_observations'] = compact['observations'][valid + 1]
    return dataset


class VisualDROLAgent(drol.DROLAgent):
    """``agents/drol.py``'s agent, its TD target written for image states.

    The agent file takes the batch shape from ``next_observations.shape[:-1]`` and tiles flat
    states over the next-state candidates; image states have three trailing axes, and the
    encoded modules broadcast each state's features over the candidates instead of tiling.
    """

    def critic_loss(self, batch, grad_params, rng):
        """TD loss with ``critic_num_candidates`` next actions per next state (best kept)."""
        batch_shape = batch['actions'].shape[:-1]
        num, dim = self.config['critic_num_candidates'], self.config['action_dim']
        latents = drol.sample_ball_prior(rng, (*batch_shape, num), dim)
        actor = self.network.select('actor_onestep_flow')
        next_actions = jnp.clip(actor(batch['next_observations'], latents), -1, 1)
        next_q = self.network.select('target_critic')(batch['next_observations'], next_actions)
        best = jnp.argmax(next_q.min(axis=0), axis=-1)
        next_q = jnp.take_along_axis(next_q, best[None, :, None], axis=-1)[..., 0]
        next_q = drol.aggregate_ensemble(next_q, self.config['q_agg'])
        critic = self.network.select('critic')
        q = critic(batch['observations'], batch['actions'], params=grad_params)
        return drol.td_loss(q, batch['rewards'], batch['masks'], next_q, self.config['discount'])


def visual_drol_agent(encoder: str, hidden, example_observations, seed: int = 0):
    """The DROL agent of ``agents/drol.py`` with one encoder in each of its modules."""
    config = drol.get_config()
    config.actor_hidden_dims = config.value_hidden_dims = hidden
    critic = EnsembleCritic(hidden, layer_norm=config.layer_norm, encoder=make_encoder(encoder))
    modules = {
        'actor_onestep_flow': ConditionedPolicy(hidden, ACTION_DIM, encoder=make_encoder(encoder)),
        'critic': critic,
        'target_critic': copy.deepcopy(critic),
    }
    rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
    actions = jnp.zeros((1, ACTION_DIM))
    network_def = ModuleDict(modules)
    params = network_def.init(init_rng, **{m: (example_observations, actions) for m in modules})
    params = params['params']
    params['modules_target_critic'] = params['modules_critic']
    network = TrainState.create(network_def, params, optax.adam(config.lr))
    config = flax.core.FrozenDict(**config, action_dim=ACTION_DIM)
    return VisualDROLAgent(rng, network=network, config=config)


def host_runner(dataset, batch, frame_stack, official_crop):
    rng = np.random.default_rng(0)
    crop = jax.jit(frames.crop)

    def run():
        if official_crop:
            sample = reference_sample(dataset, rng, batch, frame_stack)  # Stacked, not cropped.
            offsets = rng.integers(0, 2 * frames.CROP_PADDING + 1, (batch, 2))
            for key in ('observations', 'next_observations'):
                sample[key] = np.asarray(crop(sample[key], offsets))
        else:
            sample = reference_sample(dataset, rng, batch, frame_stack, p_aug=1.0)
        jax.block_until_ready(jax.device_put(sample))

    return run


def device_call_runner(data, batch, frame_stack):
    sample = jax.jit(frames.sample_batch, static_argnums=(2, 3, 4))
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 100_000))

    def run():
        jax.block_until_ready(sample(data, next(keys), batch, frame_stack, 1.0))

    return run


def device_block_runner(data, batch, frame_stack, count):
    # The data are arguments, as in the update block: a closed-over array would be compiled in.
    @jax.jit
    def block(data, key):
        def body(i, total):
            sample = frames.sample_batch(data, jax.random.fold_in(key, i), batch, frame_stack, 1.0)
            # Depend on every image, so that no part of the batch is optimised away.
            return total + sample['observations'].sum() + sample['next_observations'].sum()

        return jax.lax.fori_loop(0, count, body, jnp.zeros((), jnp.uint32))

    def run():
        block(data, jax.random.PRNGKey(0)).block_until_ready()

    return run


def update_runner(agent, data, batch, frame_stack, count, sampled):
    fixed = frames.sample_batch(data, jax.random.PRNGKey(1), batch, frame_stack, 1.0)

    @jax.jit
    def block(agent, data, fixed, key):
        def body(i, agent):
            if sampled:
                key_i = jax.random.fold_in(key, i)
                sample = frames.sample_batch(data, key_i, batch, frame_stack, 0.5)
            else:
                sample = fixed
            return agent.update(sample)[0]

        return jax.lax.fori_loop(0, count, body, agent)

    state = {'agent': agent}

    def run():
        state['agent'] = block(state['agent'], data, fixed, jax.random.PRNGKey(2))
        jax.block_until_ready(state['agent'])

    return run


def check_semantics(compact, regular, data, frame_stack):
    """The device batch equals the host reference on the same indices and crops."""
    idxs = np.arange(0, len(regular['observations']), 97)
    offsets = np.random.default_rng(3).integers(0, 2 * frames.CROP_PADDING + 1, (len(idxs), 2))
    got = frames.batch_at(data, jnp.asarray(idxs), frame_stack, jnp.asarray(offsets))
    want = reference_batch(regular, idxs, frame_stack, offsets)
    for key in ('observations', 'next_observations'):
        np.testing.assert_array_equal(np.asarray(got[key]), want[key])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--frame_stack', type=int, default=3)
    parser.add_argument('--episodes', type=int, default=20)
    parser.add_argument('--steps', type=int, default=200, help='transitions per episode')
    parser.add_argument('--encoder', default='impala_small')
    parser.add_argument('--updates', type=int, default=2, help='updates per timed block')
    parser.add_argument('--batches', type=int, default=20, help='batches per timed block')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--quick', action='store_true', help='impala_debug, batch 32, tiny MLPs')
    args = parser.parse_args()
    hidden = (512, 512, 512, 512)
    if args.quick:
        args.batch, args.encoder, args.episodes, args.repeats = 32, 'impala_debug', 4, 1
        hidden = (32,)

    compact = stored_dataset(args.episodes, args.steps)
    regular = regular_layout(compact)
    stored = frames.from_compact(compact)
    data = frames.to_device(stored)
    frames.check_fits(stored.nbytes, jax.local_devices()[:1])
    check_semantics(compact, regular, data, args.frame_stack)
    example = frames.sample_batch(data, jax.random.PRNGKey(0), 1, args.frame_stack, None)
    agent = visual_drol_agent(args.encoder, hidden, example['observations'])

    k, b = args.frame_stack, args.batch
    rows = {  # name -> (run one repetition, units it covers)
        'host-numpy': (host_runner(regular, b, k, official_crop=False), 1),
        'host-official': (host_runner(regular, b, k, official_crop=True), 1),
        'device-call': (device_call_runner(data, b, k), 1),
        'device-block': (device_block_runner(data, b, k, args.batches), args.batches),
        'update': (update_runner(agent, data, b, k, args.updates, sampled=False), args.updates),
        'update+sample': (
            update_runner(copy.deepcopy(agent), data, b, k, args.updates, sampled=True),
            args.updates,
        ),
    }
    load = os.getloadavg()[0]
    for run, _ in rows.values():  # Compile and warm up.
        run()
    times = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, (run, units) in rows.items():
            began = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - began) / units * 1e3)
    ms = {name: statistics.median(values) for name, values in times.items()}

    print(f'Machine: {machine_description()}; load average {load:.1f} at the start')
    print(
        f'Batch {b}, frame stack {k}, frames {FRAME_SHAPE}, crop padding {frames.CROP_PADDING}; '
        f'{stored.frames.shape[0]} frames stored once ({stored.nbytes / 1e6:.0f} MB on the '
        f'device, {2 * regular["observations"].nbytes / 1e6:.0f} MB as FQL holds them); '
        f'DROL(16) with {args.encoder}, hidden {hidden}.'
    )
    print(f'Median of {args.repeats} interleaved repetitions, after warm-up.')
    print('| row | ms per batch or update | vs one update |')
    print('|---|---|---|')
    for name, value in ms.items():
        print(f'| {name} | {value:.2f} | {value / ms["update"]:.1%} |')
    extra = ms['update+sample'] - ms['update']
    print(
        f'Stacking + augmentation inside the block: {ms["device-block"]:.2f} ms per batch '
        f'= {ms["device-block"] / ms["update"]:.1%} of an update (loop difference: '
        f'{extra:+.2f} ms = {extra / ms["update"]:+.1%}). FQL host path: '
        f'{ms["host-official"] / ms["device-call"]:.1f}x the on-device call.'
    )


if __name__ == '__main__':
    main()
