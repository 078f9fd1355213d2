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
and, for DROL(16) and FQL (``agents/drol.py``, ``agents/fql.py`` with ``--agent.encoder``):

  <agent> fixed  the library's compiled update block (``drol_jax.updates.make_train_block``)
                 on one fixed device batch: the update alone;
  <agent> fused  the same block drawing every batch inside it with ``sample_batch`` (frame
                 stack, p_aug 0.5: the crop runs on every batch, at the identity offset when not
                 augmenting), as training runs it;
  <agent> host   FQL's loop: the batch stacked and cropped on the host (numpy), copied to the
                 device, one jitted update per call.

The ratios compare rows of one run (interleaved repetitions, so every row sees the same load).

    python bench/pixel_speed.py                 # batch 256, frame stack 3, impala_small
    python bench/pixel_speed.py --quick         # smoke run: impala_debug, batch 32

Meant for an accelerator: on a 2-core CPU one impala_small update at batch 256 takes tens of
seconds (about 12 s per encoder gradient on a busy machine), and the default run over an hour.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from pixel_reference import reference_batch, reference_sample  # noqa: E402

from drol_jax import frames  # noqa: E402
from drol_jax.agent_file import load_agent_file  # noqa: E402
from drol_jax.analysis.runtime import machine_description  # noqa: E402
from drol_jax.updates import make_train_block, stack_agents  # noqa: E402

AGENTS = {'DROL(16)': 'drol.py', 'FQL': 'fql.py'}  # The paper's DROL keeps K = 16 (default).

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


def visual_agent(file_name: str, encoder: str, hidden, batch: int, example_observations):
    """The agent of ``agents/<file_name>`` with an ``encoder`` in each of its modules."""
    agent_file = load_agent_file(os.path.join(ROOT, 'agents', file_name))
    config = agent_file.default_config()
    config.actor_hidden_dims = config.value_hidden_dims = hidden
    config.batch_size, config.encoder = batch, encoder
    actions = jnp.zeros((1, ACTION_DIM))
    return agent_file.agent_class.create(0, example_observations, actions, config)


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


def block_runner(agent, data, batch, frame_stack, count, sampled):
    """``count`` updates in the library's compiled block: sampling inside it, or a fixed batch.

    The fixed batch is the block's data argument (a closed-over batch would be compiled in as a
    constant, and XLA would fold the encoder's first operations into it).
    """
    if sampled:
        sample = functools.partial(frames.sample_batch, frame_stack=frame_stack, p_aug=0.5)
    else:
        data = frames.sample_batch(data, jax.random.PRNGKey(1), batch, frame_stack, 1.0)

        def sample(fixed, key, batch_size):
            return fixed

    block = make_train_block(batch, sample)
    state = {'agents': stack_agents([agent]), 'keys': jax.random.PRNGKey(2)[None]}

    def run():
        result = block(state['agents'], state['keys'], data, count)
        state['agents'], state['keys'] = result.agents, result.keys
        jax.block_until_ready(result.agents)

    return run


def host_loop_runner(agent, regular, batch, frame_stack, count):
    """FQL's loop: stack and crop on the host, copy the batch over, one jitted update per call."""
    rng = np.random.default_rng(0)
    state = {'agent': agent}

    def run():
        for _ in range(count):
            sample = reference_sample(regular, rng, batch, frame_stack, p_aug=0.5)
            sample['next_actions'] = sample['actions']  # Read by no pixel agent here.
            state['agent'] = state['agent'].update(jax.device_put(sample))[0]
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
    k, b, n = args.frame_stack, args.batch, args.updates
    rows = {  # name -> (run one repetition, units it covers)
        'host-numpy': (host_runner(regular, b, k, official_crop=False), 1),
        'host-official': (host_runner(regular, b, k, official_crop=True), 1),
        'device-call': (device_call_runner(data, b, k), 1),
        'device-block': (device_block_runner(data, b, k, args.batches), args.batches),
    }
    for label, file_name in AGENTS.items():
        agent = visual_agent(file_name, args.encoder, hidden, b, example['observations'])
        rows[f'{label} fixed'] = (block_runner(agent, data, b, k, n, sampled=False), n)
        rows[f'{label} fused'] = (block_runner(agent, data, b, k, n, sampled=True), n)
        rows[f'{label} host'] = (host_loop_runner(agent, regular, b, k, n), n)
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
        f'agents with {args.encoder}, hidden {hidden}.'
    )
    print(f'Median of {args.repeats} interleaved repetitions, after warm-up.')
    reference = ms['DROL(16) fixed']
    print('| row | ms per batch or update | updates/s | vs one DROL(16) update |')
    print('|---|---|---|---|')
    for name, value in ms.items():
        speed = f'{1e3 / value:.2f}' if name.split()[-1] in ('fixed', 'fused', 'host') else ''
        print(f'| {name} | {value:.2f} | {speed} | {value / reference:.1%} |')
    for label in AGENTS:
        fixed, fused, host = (ms[f'{label} {row}'] for row in ('fixed', 'fused', 'host'))
        print(
            f'{label}: stacking + augmentation inside the block cost {fused - fixed:+.2f} ms '
            f"per update = {(fused - fixed) / fixed:+.1%} of an update; FQL's host loop takes "
            f"{host / fused:.2f}x the fused block's time."
        )
    print(
        f'Batches alone: {ms["device-block"]:.2f} ms each in a compiled loop '
        f"({ms['device-block'] / reference:.1%} of a DROL(16) update); FQL's host path "
        f'{ms["host-official"]:.2f} ms, {ms["host-official"] / ms["device-call"]:.1f}x the '
        'on-device call.'
    )


if __name__ == '__main__':
    main()
