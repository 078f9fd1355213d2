"""The training run, as functions over a frozen loop state (in the spirit of purejaxrl's ``train``).

``run(settings)`` takes resolved, checked ``Settings`` (``drol_jax.settings``) and only reads
them; with the run's fixed parts (``ctx``: data, folders, evaluator, progress) it loops::

    state = start(ctx)                                   # agents, keys, step, replay
    block = compile_block(ctx, state)
    while state.step < offline_steps and not stopped:
        state, infos = train_block(ctx, block, state, next_boundary(state.step, ...))
        state = after_block(ctx, state, infos)           # log, evaluate, save: when due
    state = online_phase(ctx, state, stop)               # FQL's per-step fine-tuning, if asked

Offline updates run in blocks fused into one compiled call (``drol_jax.updates``) on
device-resident data; blocks end exactly at the log, evaluation and checkpoint steps, so those
happen at the same steps as in FQL's one-call-per-update loop (including its evaluation after the
first update). Several seeds train together with ``jax.vmap`` over stacked agents.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from drol_jax import frames, seeding
from drol_jax.checkpoints import restore_agent, saved_steps
from drol_jax.data import ReplayBuffer, check_dataset, gather, sample_indices, to_device
from drol_jax.envs import registry
from drol_jax.envs.base import DATASET_KEYS, EnvBundle
from drol_jax.envs.frame_stack import make_stacked_env
from drol_jax.errors import NonFiniteLossError
from drol_jax.evaluation import Evaluator
from drol_jax.progress import Progress, closing_lines, describe_dataset, describe_eval
from drol_jax.run_flags import RunConfig
from drol_jax.run_folders import RunFolders
from drol_jax.settings import Settings
from drol_jax.stopping import StopFlag
from drol_jax.updates import (
    first_nonfinite,
    make_train_block,
    pad_seeds,
    replicate,
    sample_transitions,
    seed_mesh,
    shard_over_seeds,
    stack_agents,
    unstack_agent,
    validation_info,
)


@dataclasses.dataclass(frozen=True)
class LoopState:
    """What the loop carries from step to step; each step function returns a new one.

    Attributes:
        step: updates (and online steps) done.
        agents: every seed's agent, stacked on a leading axis (padded to the devices).
        keys: every seed's batch-sampling key, stacked the same way.
        replay: the online replay buffer (host memory, filled in place as in FQL), or None.
        timed: updates timed in whole blocks and their seconds (the expected duration).
        last_log: (time, step) of the last training log row (its updates/s column).
    """

    step: int
    agents: Any
    keys: jax.Array
    replay: ReplayBuffer | None = None
    timed: tuple[int, float] = (0, 0.0)
    last_log: tuple[float, int] = (0.0, 0)


@dataclasses.dataclass(frozen=True)
class RunContext:
    """The parts of a run that stay put while the loop state moves."""

    settings: Settings
    bundle: EnvBundle
    folders: RunFolders
    evaluator: Evaluator
    progress: Progress
    mesh: jax.sharding.Mesh

    @property
    def cfg(self) -> RunConfig:
        """The run flags."""
        return self.settings.run

    @property
    def batch_size(self) -> int:
        """The agent's batch size."""
        return int(self.settings.agent_config['batch_size'])

    @property
    def is_image_data(self) -> bool:
        """Whether the data is a ``FrameDataset`` (frames stored once, stacked on the device)."""
        return isinstance(self.bundle.train_dataset, frames.FrameDataset)

    def sampler(self) -> Callable:
        """The block's ``(data, key, batch_size) -> batch``; images get FQL's stack and crop."""
        if not self.is_image_data:
            return sample_transitions
        return functools.partial(
            frames.sample_batch, frame_stack=self.cfg.frame_stack, p_aug=self.cfg.p_aug
        )

    @property
    def num_slots(self) -> int:
        """Seed slots: the seeds, padded to a multiple of the devices that train them."""
        return -(-self.cfg.num_seeds // self.mesh.size) * self.mesh.size


def next_boundary(step: int, total: int, cfg: RunConfig) -> int:
    """End of the block that starts after ``step``: the next log/eval/save step or the end.

    FQL also evaluates right after the first update, so step 1 is a boundary when evaluating.
    """
    ends = [total]
    for interval in (cfg.log_interval, cfg.eval_interval, cfg.save_interval, cfg.block_size):
        if interval > 0:
            ends.append((step // interval + 1) * interval)
    if step == 0 and cfg.eval_interval > 0:
        ends.append(1)
    return min(ends)


def run(settings: Settings) -> list[dict]:
    """Train as ``settings`` say; return one summary dict per seed. ``settings`` is only read.

    A resumed run first compares its settings with the run's record (before the data loads).
    """
    cfg = settings.run
    print(
        f'Environment: {cfg.env_name!r} -> {settings.env.name!r} ({settings.env.family.name}).',
        flush=True,
    )
    print(f'Settings: {settings.settings_line()}', flush=True)
    folders = RunFolders(
        cfg.save_dir, cfg.run_group, settings.env.name, settings.agent_name, settings.seeds
    )
    folders.check_writable()
    changes = folders.check_resume(settings) if cfg.resume else None
    if not cfg.resume:
        folders.refuse_overwrite()
    bundle = registry.load(settings.env, cfg.data)
    mesh = seed_mesh(cfg.num_seeds)
    size = check_training_data(bundle, settings.env.name, mesh)
    print(f'Dataset: {describe_dataset(bundle.provenance, size)}', flush=True)
    evaluator = Evaluator(
        functools.partial(make_stacked_env, bundle.make_env, cfg.frame_stack),
        cfg.eval_episodes,
        cfg.eval_num_envs,
        bundle.normalize_score,
        cfg.video_episodes,
        cfg.video_frame_skip,
        cfg.progress,
    )
    progress = Progress(settings.total_steps, cfg.offline_steps, cfg.progress)
    context = RunContext(settings, bundle, folders, evaluator, progress, mesh)
    state = start(context)
    record = {**settings.record(), 'dataset': bundle.provenance}
    folders.open_logs(state.step, record, _wandb_options(cfg), changes)
    started, start_step = time.time(), state.step
    # From here to the end a signal stops the loop cleanly (the evaluator closes inside it).
    with StopFlag() as stop, evaluator:
        state = train(context, state, stop)
        if stop.signal_name is not None:
            save(context, state)
        progress.close()
        summaries = finish(context, state, stop.signal_name, time.time() - started, start_step)
        folders.close()
    return summaries


def check_training_data(bundle: EnvBundle, name: str, mesh: jax.sharding.Mesh) -> int:
    """Check the training data (finite, complete; image data must fit on every device).

    Image data is one copy of its frames per device; ``DatasetError`` names the bytes needed
    and available before anything is copied. Returns the number of transitions.
    """
    dataset = bundle.train_dataset
    if not isinstance(dataset, frames.FrameDataset):
        check_dataset(dataset, f'{name} training data')
        return len(dataset['observations'])
    frames.check_fits(dataset.nbytes, list(mesh.devices.flat), what=f'{name} training data')
    print(f'Image data: {dataset.describe()}.', flush=True)
    return dataset.size


def train(ctx: RunContext, state: LoopState, stop: StopFlag) -> LoopState:
    """The loop: offline blocks until done or signalled, then online fine-tuning if asked."""
    if state.step < ctx.cfg.offline_steps:
        block = compile_block(ctx, state)
        state = open_progress(ctx, state)
        while state.step < ctx.cfg.offline_steps and stop.signal_name is None:
            end = next_boundary(state.step, ctx.cfg.offline_steps, ctx.cfg)
            state, infos = train_block(ctx, block, state, end)
            state = after_block(ctx, state, infos)
    if ctx.cfg.online_steps and stop.signal_name is None:
        state = online_phase(ctx, state, stop)
    return state


# ---------------------------------------------------------------------------------------------
# Start: fresh agents, or the latest checkpoint.


def start(ctx: RunContext) -> LoopState:
    """Fresh agents (one per seed, stacked) or, with ``--resume``, the latest checkpoint."""
    cfg, seeds = ctx.cfg, ctx.settings.seeds
    ex_obs, ex_act = example_inputs(ctx)
    agent_class, config = ctx.settings.agent.agent_class, ctx.settings.agent_config
    # Each create() gets a mutable copy: official FQL agents add entries to their config there.
    agents = [agent_class.create(s, ex_obs, ex_act, config.as_configdict()) for s in seeds]
    if cfg.restore_path:
        agents = [restore_agent(a, cfg.restore_path, cfg.restore_epoch) for a in agents]
    state = LoopState(0, stack_agents(agents), seeding.sampler_keys(list(seeds)))
    if cfg.resume:
        candidates = ctx.folders.resume_candidates()
        target = {'agents': state.agents, 'sampler_keys': state.keys, 'step': 0}
        replay = make_replay_buffer(ctx) if candidates[0] > cfg.offline_steps else None
        if replay is not None:
            target['replay'] = replay.state_dict()
        step, restored = ctx.folders.load_latest(candidates, target)
        if replay is not None:
            replay.load_state_dict(restored['replay'])
        state = LoopState(step, restored['agents'], restored['sampler_keys'], replay)
        print(f'Resuming {ctx.folders.folders[0].run_dir} from step {step}.', flush=True)
    agents, keys = shard_over_seeds(pad_seeds((state.agents, state.keys), ctx.num_slots), ctx.mesh)
    return dataclasses.replace(state, agents=agents, keys=keys)


def example_inputs(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """One observation (as the agent sees it: frames stacked) and one action of the data."""
    dataset = ctx.bundle.train_dataset
    if not ctx.is_image_data:
        return dataset['observations'][:1], dataset['actions'][:1]
    batch = frames.batch_at(dataset, np.zeros(1, np.int32), ctx.cfg.frame_stack)
    return np.asarray(batch['observations']), np.asarray(batch['actions'])


def make_replay_buffer(ctx: RunContext) -> ReplayBuffer:
    """FQL's fine-tuning buffer: empty (balanced sampling) or seeded with the dataset."""
    dataset = ctx.bundle.train_dataset
    if ctx.cfg.balanced_sampling:
        return ReplayBuffer({k: dataset[k][0] for k in DATASET_KEYS}, ctx.cfg.buffer_size)
    return ReplayBuffer.from_dataset(dataset, ctx.cfg.buffer_size)


# ---------------------------------------------------------------------------------------------
# Offline blocks.


def compile_block(ctx: RunContext, state: LoopState) -> Callable:
    """The compiled update block with the data on the devices: ``(agents, keys, n) -> result``.

    Compiled before the progress bar opens, so the bar's clock is the training's.
    """
    dataset = ctx.bundle.train_dataset
    # Image data goes as it is (uint8 frames stay uint8); state data as float32.
    data = replicate(dataset if ctx.is_image_data else to_device(dataset), ctx.mesh)
    began = time.time()
    block = make_train_block(ctx.batch_size, ctx.sampler())
    lowered = block.lower(state.agents, state.keys, data, 1)
    compiled = lowered.compile()
    print(f'Compiled the update block in {time.time() - began:.1f} s.', flush=True)
    return lambda agents, keys, num_updates: compiled(agents, keys, data, num_updates)


def open_progress(ctx: RunContext, state: LoopState) -> LoopState:
    """Open the progress bar (once) and start the clock of the updates/s column."""
    if ctx.progress.bar is not None:
        return state
    ctx.progress.open(state.step)
    return dataclasses.replace(state, last_log=(time.time(), state.step))


def train_block(ctx: RunContext, block: Callable, state: LoopState, end: int):
    """The updates up to ``end``: ``(state, last metrics)``; ``NonFiniteLossError`` on NaN/inf.

    The block is timed whole (its metrics are read back, so it has finished) for the expected
    duration.
    """
    began = time.time()
    result = block(state.agents, state.keys, end - state.step)
    infos = jax.tree_util.tree_map(np.asarray, result.last_info)
    seconds = time.time() - began
    seeds = ctx.settings.seeds
    bad = first_nonfinite({k: np.asarray(v)[: len(seeds)] for k, v in result.first_bad.items()})
    if bad is not None:
        name, seed_index, offset = bad
        raise NonFiniteLossError(
            f'non-finite training/{name} at step {state.step + offset + 1} (seed '
            f'{seeds[seed_index]}); stopped, {_last_checkpoint(ctx, seed_index)}.'
        )
    updates, total_seconds = state.timed
    timed = (updates + end - state.step, total_seconds + seconds)
    ctx.progress.timed(*timed, step=end)
    return dataclasses.replace(
        state, step=end, agents=result.agents, keys=result.keys, timed=timed
    ), infos


def _last_checkpoint(ctx: RunContext, seed_index: int) -> str:
    """Where the last good checkpoint of a seed is, in words."""
    run_dir = ctx.folders.folders[seed_index].run_dir
    saved = saved_steps(run_dir)
    kept = f'last good checkpoint: step {saved[-1]}' if saved else 'no checkpoint yet'
    return f'{kept} in {run_dir}'


# ---------------------------------------------------------------------------------------------
# What happens at the boundaries.


def _log_due(ctx: RunContext, step: int) -> bool:
    return step % ctx.cfg.log_interval == 0 or step == ctx.cfg.offline_steps


def _eval_due(ctx: RunContext, step: int) -> bool:
    interval = ctx.cfg.eval_interval
    return bool(interval and ctx.cfg.eval_episodes and (step == 1 or step % interval == 0))


def _save_due(ctx: RunContext, step: int) -> bool:
    interval = ctx.cfg.save_interval
    return bool(interval and step % interval == 0) or step == ctx.settings.total_steps


def after_block(ctx: RunContext, state: LoopState, infos: dict[str, np.ndarray]) -> LoopState:
    """Log, evaluate and checkpoint whatever is due at ``state.step``."""
    ctx.progress.advance(state.step)
    if _log_due(ctx, state.step):
        state = log(ctx, state, infos)
    if _eval_due(ctx, state.step):
        state = evaluate(ctx, state)
    if _save_due(ctx, state.step):
        state = save(ctx, state)
    return state


def log(ctx: RunContext, state: LoopState, infos: dict[str, np.ndarray]) -> LoopState:
    """Log the last update's metrics (as FQL does) plus validation losses and speed."""
    now = time.time()
    last_time, last_step = state.last_log
    speed = (state.step - last_step) / max(now - last_time, 1e-9)
    for index, folder in enumerate(ctx.folders.folders):
        row = {f'training/{k}': float(v[index]) for k, v in infos.items()}
        row |= _validation_row(ctx, state, index)
        row['time/updates_per_second'] = speed * len(ctx.folders.folders)
        folder.record_train(row, state.step)
    shown = {
        name.split('/')[-1]: f'{float(infos[name][0]):.3g}'
        for name in ctx.settings.agent.progress_metrics
        if name in infos
    }
    ctx.progress.advance(state.step, shown)
    return dataclasses.replace(state, last_log=(now, state.step))


def _validation_row(ctx: RunContext, state: LoopState, index: int) -> dict[str, float]:
    """FQL's ``validation/...`` losses on a batch of the validation split (if any).

    Image batches are stacked and augmented as the training batches are (FQL sets
    ``frame_stack`` and ``p_aug`` on both splits).
    """
    val = ctx.bundle.val_dataset
    if val is None:
        return {}
    key = jax.random.fold_in(jax.random.PRNGKey(ctx.settings.seeds[index]), state.step)
    if ctx.is_image_data:
        batch = ctx.sampler()(val, key, ctx.batch_size)
    else:
        idx = np.asarray(sample_indices(key, len(val['observations']), ctx.batch_size))
        batch = gather(val, idx)
    info = validation_info(state.agents, index, batch)
    return {f'validation/{k}': float(v) for k, v in info.items()}


def evaluate(ctx: RunContext, state: LoopState) -> LoopState:
    """Evaluate every seed's policy; one printed line per seed."""
    for index, folder in enumerate(ctx.folders.folders):
        agent = unstack_agent(state.agents, index)
        row = ctx.evaluator.evaluate(agent, folder.seed, state.step, folder.run_dir)
        folder.record_eval(row, state.step)
        ctx.progress.write(f'step {state.step} seed {folder.seed}: {describe_eval(row)}')
    return state


def save(ctx: RunContext, state: LoopState) -> LoopState:
    """Checkpoint every seed's folder; only real seeds are saved (not the padding slots)."""
    real = len(ctx.settings.seeds)
    agents, keys = jax.tree_util.tree_map(lambda x: x[:real], (state.agents, state.keys))
    checkpoint = {'agents': agents, 'sampler_keys': keys, 'step': state.step}
    if state.replay is not None:
        checkpoint['replay'] = state.replay.state_dict()
    ctx.folders.save(state.step, checkpoint)
    return state


# ---------------------------------------------------------------------------------------------
# Online fine-tuning.


def online_phase(ctx: RunContext, state: LoopState, stop: StopFlag) -> LoopState:
    """FQL's offline-to-online loop: act, store, update once per environment step.

    The one seed's agent stays unstacked between boundaries; the state is rebuilt only where a
    log, evaluation or checkpoint is due.
    """
    state = open_progress(ctx, state)
    agent = unstack_agent(state.agents, 0)
    replay = state.replay or make_replay_buffer(ctx)
    dataset, seed = ctx.bundle.train_dataset, ctx.settings.seeds[0]
    half = ctx.batch_size // 2
    host_rng = seeding.online_host_rng(seed, state.step)
    env, step = ctx.bundle.make_env(), state.step
    try:
        observation, _ = env.reset(seed=seed + step)
        while step < ctx.settings.total_steps and stop.signal_name is None:
            step += 1
            key = seeding.online_action_key(seed, step)
            # FQL acts with temperature 1 while fine-tuning (and evaluates with 0).
            action = np.asarray(agent.sample_actions(observation, seed=key, temperature=1.0))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            replay.add(
                {
                    'observations': observation,
                    'actions': action,
                    'rewards': reward + ctx.bundle.online_reward_shift,
                    'masks': 1.0 - float(terminated),
                    'terminals': float(terminated or truncated),
                    'next_observations': next_observation,
                }
            )
            observation = next_observation
            if terminated or truncated:
                observation, _ = env.reset()
            if ctx.cfg.balanced_sampling:
                size = len(dataset['observations'])
                from_data = gather(dataset, host_rng.integers(size, size=half))
                from_replay = replay.sample(host_rng, ctx.batch_size - half)
                batch = {k: np.concatenate([from_data[k], from_replay[k]]) for k in from_data}
            else:
                batch = replay.sample(host_rng, ctx.batch_size)
            agent, info = agent.update(batch)
            if _log_due(ctx, step) or _eval_due(ctx, step) or _save_due(ctx, step):
                state = dataclasses.replace(
                    state, step=step, agents=stack_agents([agent]), replay=replay
                )
                infos = {k: np.asarray(v).reshape(1) for k, v in info.items()}
                state = after_block(ctx, state, infos)
            else:
                ctx.progress.advance(step)
    finally:
        env.close()
    return dataclasses.replace(state, step=step, agents=stack_agents([agent]), replay=replay)


# ---------------------------------------------------------------------------------------------
# The end.


def finish(
    ctx: RunContext, state: LoopState, signal_name: str | None, wall: float, start_step: int
) -> list[dict]:
    """Write ``summary.json`` per seed and print the closing lines."""
    seed_updates = (state.step - start_step) * len(ctx.settings.seeds)
    summaries = ctx.folders.write_summaries(
        {
            'env_name': ctx.bundle.env_name,
            'agent_name': ctx.settings.agent_name,
            'step': state.step,
            'complete': state.step >= ctx.settings.total_steps,
            'preempted_by': signal_name,
            'wall_time_s': wall,
            'updates_per_second': seed_updates / max(wall, 1e-9),
            'dataset': ctx.bundle.provenance,
        }
    )
    run_dirs = [folder.run_dir for folder in ctx.folders.folders]
    for line in closing_lines(summaries, run_dirs, signal_name, wall):
        print(line, flush=True)
    return summaries


def _wandb_options(cfg: RunConfig) -> dict | None:
    """The wandb run options, or None when ``--wandb_mode=disabled``."""
    if cfg.wandb_mode == 'disabled':
        return None
    return dict(mode=cfg.wandb_mode, project=cfg.wandb_project, group=cfg.run_group)
