"""The training run: checks, data, agents, compiled update blocks, logs, evaluation, checkpoints.

Offline training runs in blocks of updates fused into one compiled call (``lax.scan``) on
device-resident data; blocks end exactly at the log, evaluation and checkpoint steps, so those
happen at the same steps as in FQL's one-call-per-update loop. Several seeds train in one
process with ``jax.vmap`` over the stacked agent states. Online fine-tuning (optional) follows
FQL's per-step loop.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from drol_jax import checkpoints, config_checks, evaluation
from drol_jax.data import ReplayBuffer, check_dataset, gather, sample_indices, to_device
from drol_jax.envs import registry
from drol_jax.envs.base import DATASET_KEYS, DataOptions, EnvBundle
from drol_jax.errors import ConfigError, NonFiniteLossError, UserError
from drol_jax.logger import CsvLogger, WandbLogger


@dataclasses.dataclass
class RunConfig:
    """Everything about a run except the agent's hyperparameters (FQL's flags plus ours)."""

    env_name: str = 'cube-single'
    seed: int = 0
    num_seeds: int = 1  # Seeds seed, seed+1, ... trained together in one process.
    run_group: str = 'debug'
    save_dir: str = 'exp'
    offline_steps: int = 1_000_000
    online_steps: int = 0
    buffer_size: int = 2_000_000
    log_interval: int = 5000
    eval_interval: int = 100_000
    save_interval: int = 1_000_000
    eval_episodes: int = 50
    video_episodes: int = 0
    video_frame_skip: int = 3
    balanced_sampling: bool = False
    block_size: int = 0  # Updates per compiled call; 0 means "up to the next log step".
    eval_num_envs: int = 1  # Env copies stepped in lockstep in worker processes (1: in-process).
    resume: bool = False
    restore_path: str | None = None
    restore_epoch: int | None = None
    wandb_mode: str = 'disabled'
    wandb_project: str = 'drol_jax'
    progress: bool = True
    data: DataOptions = dataclasses.field(default_factory=DataOptions)


def run_dir_for(cfg: RunConfig, env_name: str, agent_name: str, seed: int) -> str:
    """Deterministic run folder: ``save_dir/run_group/env/agent/seed<k>``."""
    return os.path.join(cfg.save_dir, cfg.run_group, env_name, agent_name, f'seed{seed}')


def check_run_config(cfg: RunConfig) -> None:
    """Reject invalid run flags (one sentence each) before anything is loaded."""
    config_checks.check_nonnegative(
        offline_steps=cfg.offline_steps,
        online_steps=cfg.online_steps,
        eval_episodes=cfg.eval_episodes,
        video_episodes=cfg.video_episodes,
        log_interval=cfg.log_interval,
        eval_interval=cfg.eval_interval,
        save_interval=cfg.save_interval,
        block_size=cfg.block_size,
    )
    if cfg.num_seeds < 1:
        raise ConfigError(f'--num_seeds must be >= 1, got {cfg.num_seeds}.')
    if cfg.eval_num_envs < 1:
        raise ConfigError(f'--eval_num_envs must be >= 1, got {cfg.eval_num_envs}.')
    if cfg.video_frame_skip < 1:
        raise ConfigError(f'--video_frame_skip must be >= 1, got {cfg.video_frame_skip}.')
    if cfg.online_steps and cfg.num_seeds > 1:
        raise ConfigError('online fine-tuning (--online_steps) trains one seed: use --num_seeds=1.')
    if cfg.wandb_mode not in ('disabled', 'online', 'offline'):
        raise ConfigError(
            f'--wandb_mode must be disabled, online or offline, got {cfg.wandb_mode!r}.'
        )
    if (cfg.restore_path is None) != (cfg.restore_epoch is None):
        raise ConfigError('--restore_path and --restore_epoch go together.')
    if cfg.resume and cfg.restore_path:
        raise ConfigError('use either --resume (continue this run) or --restore_path, not both.')


# ---------------------------------------------------------------------------------------------
# Compiled update blocks.


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


def make_train_block(batch_size: int) -> Callable:
    """A compiled ``(agents, keys, data, num_updates) -> (agents, keys, last_info, first_bad)``.

    Per seed, each update draws its batch indices on the device from that seed's sampling key
    (``sample_indices``) and gathers them from the device-resident data: no host work per update.
    ``num_updates`` is traced, so blocks of any length share one compiled program. The carry
    keeps the last update's metrics (what FQL logs) and, per metric, the index of the first
    update that made it non-finite (-1 if none).
    """

    def train_block(agents, keys, data, num_updates):
        size = data['observations'].shape[0]

        def one_seed(agent, key):
            def update(agent, key):
                key, sample_key = jax.random.split(key)
                agent, info = agent.update(
                    gather(data, sample_indices(sample_key, size, batch_size))
                )
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

            return jax.lax.fori_loop(0, num_updates, body, (agent, key, last_info, first_bad))

        if keys.shape[0] == 1:
            # One seed runs unbatched: under vmap a size-1 seed axis turns every dense layer into
            # a batched dot and XLA:CPU transposes the weights at every update (about 25% slower,
            # bench/RESULTS.md). Same numbers, same output shapes.
            return jax.tree_util.tree_map(
                lambda x: x[None], one_seed(unstack_agent(agents, 0), keys[0])
            )
        return jax.vmap(one_seed)(agents, keys)

    return jax.jit(train_block, donate_argnums=(0, 1))


def host_loop_updates(
    agent, dataset: dict[str, np.ndarray], key, num_updates: int, batch_size: int
):
    """FQL-style reference loop: one jit call per update with a batch gathered on the host.

    Uses the same index stream as ``make_train_block`` so the two can be compared exactly.
    Returns the agent, the key and the list of per-update metric dicts.
    """
    size = len(dataset['observations'])
    infos = []
    for _ in range(num_updates):
        key, sample_key = jax.random.split(key)
        batch = gather(dataset, np.asarray(sample_indices(sample_key, size, batch_size)))
        agent, info = agent.update(batch)
        infos.append(info)
    return agent, key, infos


def first_nonfinite(first_bad: dict[str, np.ndarray]) -> tuple[str, int, int] | None:
    """(metric, seed index, update index in block) of the earliest NaN/inf metric, or None."""
    worst = None
    for name, per_seed in first_bad.items():
        for seed_index, update in enumerate(np.asarray(per_seed)):
            if update >= 0 and (worst is None or update < worst[2]):
                worst = (name, seed_index, int(update))
    return worst


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


# ---------------------------------------------------------------------------------------------
# The run.


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks between blocks (preemption)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass
class _SeedLogs:
    """Log files of one seed's run folder."""

    run_dir: str
    train: CsvLogger
    eval: CsvLogger
    wandb: WandbLogger | None = None

    def log_train(self, row, step):
        """Training row to CSV (and wandb)."""
        self.train.log(row, step)
        if self.wandb:
            self.wandb.log(row, step)

    def log_eval(self, row, step):
        """Evaluation row to CSV (and wandb)."""
        self.eval.log(row, step)
        if self.wandb:
            self.wandb.log(row, step)


class Run:
    """One training run (possibly several seeds) from resolved data to summary."""

    def __init__(self, cfg: RunConfig, agent_class, agent_config, bundle: EnvBundle, flags: dict):
        self.cfg = cfg
        self.agent_class = agent_class
        self.agent_config = agent_config
        self.bundle = bundle
        self.seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
        self.mesh = seed_mesh(cfg.num_seeds)
        # Seed slots: the seeds, padded to a multiple of the devices that train them.
        self.num_slots = -(-cfg.num_seeds // self.mesh.size) * self.mesh.size
        self.agent_name = agent_config['agent_name']
        self.run_dirs = [run_dir_for(cfg, bundle.env_name, self.agent_name, s) for s in self.seeds]
        self.flags = flags
        self.batch_size = int(agent_config['batch_size'])
        self.total_steps = cfg.offline_steps + cfg.online_steps
        self.eval_env = None
        self.eval_workers: evaluation.EnvWorkers | None = None
        self.render_ok: bool | None = None
        self.best_eval: list[dict | None] = [None] * len(self.seeds)
        self.last_eval: list[dict | None] = [None] * len(self.seeds)

    # -- setup ---------------------------------------------------------------------------------

    def prepare_folders(self) -> int:
        """Create run folders; on resume return the checkpoint step, else refuse to overwrite."""
        for run_dir in self.run_dirs:
            os.makedirs(run_dir, exist_ok=True)
        if self.cfg.resume:
            steps = [checkpoints.saved_steps(d) for d in self.run_dirs]
            common = set(steps[0]).intersection(*steps[1:])
            if not common:
                raise UserError(f'--resume: no checkpoint in {self.run_dirs[0]} to resume from.')
            return max(common)
        for run_dir in self.run_dirs:
            existing = [
                f for f in ('train.csv', 'eval.csv') if os.path.exists(os.path.join(run_dir, f))
            ]
            if checkpoints.saved_steps(run_dir):
                existing.append('checkpoints')
            if existing:
                raise UserError(
                    f'run folder {run_dir} already holds a run; pass --resume to continue it, or '
                    'choose another --run_group, --seed or --save_dir.'
                )
        return 0

    def open_logs(self, start_step: int) -> list[_SeedLogs]:
        """Open the CSV logs (dropping rows after ``start_step`` on resume) and flags.json."""
        logs = []
        for seed, run_dir in zip(self.seeds, self.run_dirs, strict=True):
            seed_logs = _SeedLogs(
                run_dir,
                CsvLogger(os.path.join(run_dir, 'train.csv')),
                CsvLogger(os.path.join(run_dir, 'eval.csv')),
            )
            if self.cfg.resume:
                seed_logs.train.truncate_after(start_step)
                seed_logs.eval.truncate_after(start_step)
            flags = {**self.flags, 'seed': seed, 'dataset': self.bundle.provenance}
            _write_json(os.path.join(run_dir, 'flags.json'), flags)
            if self.cfg.wandb_mode != 'disabled':
                name = f'{self.cfg.run_group}/{self.bundle.env_name}/{self.agent_name}/seed{seed}'
                seed_logs.wandb = WandbLogger(
                    self.cfg.wandb_mode,
                    self.cfg.wandb_project,
                    self.cfg.run_group,
                    name,
                    flags,
                    run_dir,
                )
            logs.append(seed_logs)
        return logs

    def create_agents(self):
        """One agent per seed (created separately, so each equals a single-seed run), stacked."""
        ds = self.bundle.train_dataset
        ex_obs, ex_act = ds['observations'][:1], ds['actions'][:1]
        agents = [self.agent_class.create(s, ex_obs, ex_act, self.agent_config) for s in self.seeds]
        if self.cfg.restore_path:
            agents = [
                checkpoints.restore_agent(a, self.cfg.restore_path, self.cfg.restore_epoch)
                for a in agents
            ]
        return stack_agents(agents)

    # -- pieces of the loop --------------------------------------------------------------------

    def evaluate(self, agents, step: int, logs: list[_SeedLogs]) -> None:
        """Evaluate every seed's policy, log ``evaluation/...`` and keep best/last results."""
        if self.eval_env is None:
            self.eval_env = self.bundle.make_env()
        if self.cfg.eval_num_envs > 1 and self.eval_workers is None:
            # Started once and kept: starting MuJoCo workers costs seconds.
            self.eval_workers = evaluation.EnvWorkers(self.bundle.make_env, self.cfg.eval_num_envs)
        for index, seed in enumerate(self.seeds):
            policy = make_policy(unstack_agent(agents, index), seed, step)
            if self.eval_workers is None:
                stats = evaluation.evaluate_sequential(
                    self.eval_env,
                    policy,
                    self.cfg.eval_episodes,
                    seed,
                    self.bundle.normalize_score,
                    self.cfg.progress,
                )
            else:
                episodes = self.eval_workers.run_episodes(
                    policy, self.cfg.eval_episodes, seed, self.cfg.progress
                )
                stats = evaluation.summarize(episodes, self.bundle.normalize_score)
            row = {f'evaluation/{k}': v for k, v in stats.items()}
            logs[index].log_eval(row, step)
            self.last_eval[index] = {'step': step, **row}
            if self.best_eval[index] is None or _score(row) > _score(self.best_eval[index]):
                self.best_eval[index] = {'step': step, **row}
            if self.cfg.video_episodes and self.can_render():
                videos = evaluation.record_videos(
                    self.eval_env, policy, self.cfg.video_episodes, seed, self.cfg.video_frame_skip
                )
                _save_videos(logs[index].run_dir, step, videos)

    def can_render(self) -> bool:
        """Whether videos can be recorded; checked once per run, with a warning if not."""
        if self.render_ok is None:
            self.render_ok = evaluation.rendering_works(self.bundle.make_env)
            if not self.render_ok:
                warnings.warn(
                    'video rendering does not work here (no display or GL backend); set '
                    'MUJOCO_GL=egl or MUJOCO_GL=osmesa. Continuing without videos.',
                    stacklevel=2,
                )
        return self.render_ok

    def validation_rows(self, agents, step: int) -> list[dict]:
        """FQL's ``validation/...`` losses on a batch of the validation split (if any)."""
        val = self.bundle.val_dataset
        if val is None:
            return [{} for _ in self.seeds]
        rows = []
        for index in range(len(self.seeds)):
            agent = unstack_agent(agents, index)
            key = jax.random.fold_in(jax.random.PRNGKey(self.seeds[index]), step)
            idx = np.asarray(sample_indices(key, len(val['observations']), self.batch_size))
            _, info = agent.total_loss(gather(val, idx), grad_params=agent.network.params)
            rows.append({f'validation/{k}': float(v) for k, v in info.items()})
        return rows

    def save(self, step: int, agents, keys, replay: ReplayBuffer | None = None) -> None:
        """Checkpoint each seed's folder (the file holds the stacked state for all seeds)."""
        # Only the real seeds are saved, so a resume may use a different number of devices.
        agents, keys = jax.tree_util.tree_map(lambda x: x[: len(self.seeds)], (agents, keys))
        state = {'agents': agents, 'sampler_keys': keys, 'step': step}
        if replay is not None:
            state['replay'] = replay.state_dict()
        for run_dir in self.run_dirs:
            checkpoints.save(run_dir, step, state)

    # -- main loop -----------------------------------------------------------------------------

    def execute(self) -> list[dict]:
        """Train, evaluate, checkpoint; return one summary dict per seed."""
        start_step = self.prepare_folders()
        agents = self.create_agents()
        keys = jnp.stack([jax.random.PRNGKey(s + 10_007) for s in self.seeds])
        replay = None
        if start_step:
            state = {'agents': agents, 'sampler_keys': keys, 'step': 0}
            if start_step > self.cfg.offline_steps:
                replay = self.make_replay_buffer()
                state['replay'] = replay.state_dict()
            restored = checkpoints.load(
                checkpoints.checkpoint_path(self.run_dirs[0], start_step), state
            )
            agents, keys = restored['agents'], restored['sampler_keys']
            if replay is not None:
                replay.load_state_dict(restored['replay'])
            print(f'Resuming {self.run_dirs[0]} from step {start_step}.', flush=True)
        agents, keys = shard_over_seeds(pad_seeds((agents, keys), self.num_slots), self.mesh)
        logs = self.open_logs(start_step)
        self._restore_eval_history(logs)

        started = time.time()
        with (
            _StopFlag() as stop,
            tqdm(
                total=self.total_steps,
                initial=start_step,
                desc='training',
                disable=not self.cfg.progress,
                dynamic_ncols=True,
            ) as bar,
        ):
            try:
                step, agents, keys = self.offline_phase(start_step, agents, keys, logs, stop, bar)
                if stop.signal_name is None and self.cfg.online_steps:
                    step, agents = self.online_phase(step, agents, keys, logs, stop, bar, replay)
            finally:
                if self.eval_workers is not None:
                    self.eval_workers.close()
        wall = time.time() - started
        if stop.signal_name is not None:
            print(
                f'Received {stop.signal_name} at step {step}: checkpoint saved, logs flushed. '
                'Continue with --resume.',
                flush=True,
            )
        summaries = self.write_summaries(step, wall, step - start_step, preempted=stop.signal_name)
        for seed_logs in logs:
            if seed_logs.wandb:
                seed_logs.wandb.close()
        return summaries

    def offline_phase(self, step, agents, keys, logs, stop, bar):
        """Fused blocks of updates on device-resident data until ``offline_steps``."""
        if step >= self.cfg.offline_steps:
            return step, agents, keys
        data = replicate(to_device(self.bundle.train_dataset), self.mesh)
        train_block = make_train_block(self.batch_size)
        last_time, last_step = time.time(), step
        while step < self.cfg.offline_steps:
            end = next_boundary(step, self.cfg.offline_steps, self.cfg)
            new_agents, new_keys, infos, first_bad = train_block(agents, keys, data, end - step)
            infos = jax.tree_util.tree_map(np.asarray, infos)
            bad = first_nonfinite(
                {k: np.asarray(v)[: len(self.seeds)] for k, v in first_bad.items()}
            )
            if bad is not None:
                name, seed_index, offset = bad
                saved = checkpoints.saved_steps(self.run_dirs[seed_index])
                kept = f'last good checkpoint: step {saved[-1]}' if saved else 'no checkpoint yet'
                raise NonFiniteLossError(
                    f'non-finite training/{name} at step {step + offset + 1} (seed '
                    f'{self.seeds[seed_index]}); stopped, {kept} in {self.run_dirs[seed_index]}.'
                )
            agents, keys, step = new_agents, new_keys, end
            bar.update(end - bar.n)
            if step % self.cfg.log_interval == 0 or step == self.cfg.offline_steps:
                now = time.time()
                speed = (step - last_step) / max(now - last_time, 1e-9)
                last_time, last_step = now, step
                self.log_training(agents, infos, step, speed, logs, bar)
            self.after_update(step, agents, keys, logs, stop)
            if stop.signal_name is not None:
                self.save(step, agents, keys)
                break
        return step, agents, keys

    def log_training(self, agents, infos, step, speed, logs, bar) -> None:
        """Log the last update's metrics (as FQL does) plus validation losses and speed."""
        val_rows = self.validation_rows(agents, step)
        for index, seed_logs in enumerate(logs):
            row = {f'training/{k}': float(v[index]) for k, v in infos.items()}
            row |= val_rows[index]
            row['time/updates_per_second'] = speed * len(self.seeds)
            seed_logs.log_train(row, step)
        bar.set_postfix(_key_metrics(infos), refresh=False)

    def after_update(self, step, agents, keys, logs, stop, replay=None) -> None:
        """Evaluation and checkpoints due at ``step``."""
        due = self.cfg.eval_interval and (step == 1 or step % self.cfg.eval_interval == 0)
        if due and self.cfg.eval_episodes:
            self.evaluate(agents, step, logs)
        final = step == self.total_steps
        if (self.cfg.save_interval and step % self.cfg.save_interval == 0) or final:
            self.save(step, agents, keys, replay)

    def make_replay_buffer(self) -> ReplayBuffer:
        """FQL's fine-tuning buffer: empty (balanced sampling) or seeded with the dataset."""
        dataset = self.bundle.train_dataset
        if self.cfg.balanced_sampling:
            return ReplayBuffer({k: dataset[k][0] for k in DATASET_KEYS}, self.cfg.buffer_size)
        return ReplayBuffer.from_dataset(dataset, self.cfg.buffer_size)

    def online_phase(self, step, agents, keys, logs, stop, bar, replay):
        """FQL's offline-to-online loop: act, store, update once per environment step."""
        agent = unstack_agent(agents, 0)
        replay = replay or self.make_replay_buffer()
        dataset = self.bundle.train_dataset
        env = self.bundle.make_env()
        host_rng = np.random.default_rng([self.seeds[0], step])
        observation, _ = env.reset(seed=self.seeds[0] + step)
        half = self.batch_size // 2
        while step < self.total_steps:
            step += 1
            key = jax.random.fold_in(jax.random.PRNGKey(self.seeds[0] + 20_011), step)
            action = np.asarray(agent.sample_actions(observation, seed=key))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            reward += self.bundle.online_reward_shift
            replay.add(
                {
                    'observations': observation,
                    'actions': action,
                    'rewards': reward,
                    'masks': 1.0 - float(terminated),
                    'terminals': float(terminated or truncated),
                    'next_observations': next_observation,
                }
            )
            observation = next_observation
            if terminated or truncated:
                observation, _ = env.reset()
            if self.cfg.balanced_sampling:
                from_data = gather(
                    dataset, host_rng.integers(len(dataset['observations']), size=half)
                )
                from_replay = replay.sample(host_rng, self.batch_size - half)
                batch = {k: np.concatenate([from_data[k], from_replay[k]]) for k in DATASET_KEYS}
            else:
                batch = replay.sample(host_rng, self.batch_size)
            agent, info = agent.update(batch)
            agents = stack_agents([agent])
            bar.update(1)
            if step % self.cfg.log_interval == 0:
                infos = {k: np.asarray(v).reshape(1) for k, v in info.items()}
                self.log_training(agents, infos, step, float('nan'), logs, bar)
            self.after_update(step, agents, keys, logs, stop, replay)
            if stop.signal_name is not None:
                self.save(step, agents, keys, replay)
                break
        return step, agents

    # -- summary -------------------------------------------------------------------------------

    def _restore_eval_history(self, logs: list[_SeedLogs]) -> None:
        """On resume, rebuild best/last evaluation from the kept eval.csv rows."""
        for index, seed_logs in enumerate(logs):
            path = seed_logs.eval.path
            if not os.path.exists(path):
                continue
            for row in _read_csv(path):
                entry = {'step': int(float(row['step']))} | {
                    k: float(v) for k, v in row.items() if k != 'step' and v != ''
                }
                self.last_eval[index] = entry
                if self.best_eval[index] is None or _score(entry) > _score(self.best_eval[index]):
                    self.best_eval[index] = entry

    def write_summaries(self, step, wall, updates, preempted) -> list[dict]:
        """``summary.json`` per seed: final and best evaluation, time, speed, data source."""
        summaries = []
        for index, run_dir in enumerate(self.run_dirs):
            summary = {
                'env_name': self.bundle.env_name,
                'agent_name': self.agent_name,
                'seed': self.seeds[index],
                'step': step,
                'complete': step >= self.total_steps,
                'preempted_by': preempted,
                'final_eval': self.last_eval[index],
                'best_eval': self.best_eval[index],
                'wall_time_s': wall,
                'updates_per_second': updates * len(self.seeds) / max(wall, 1e-9),
                'dataset': self.bundle.provenance,
            }
            _write_json(os.path.join(run_dir, 'summary.json'), summary)
            summaries.append(summary)
        return summaries


@jax.jit
def _policy_actions(agent, base_key, observations, episodes, env_steps):
    """Actions for a batch of observations, each keyed by its (episode, env step)."""
    keys = jax.vmap(lambda e, t: jax.random.fold_in(jax.random.fold_in(base_key, e), t))(
        episodes, env_steps
    )
    return jax.vmap(lambda o, k: agent.sample_actions(o, seed=k))(observations, keys)


def make_policy(agent, seed: int, step: int) -> evaluation.Policy:
    """An evaluation policy whose randomness is keyed by (seed, step, episode, env step)."""
    base_key = jax.random.fold_in(jax.random.PRNGKey(seed + 30_011), step)
    return lambda o, e, t: np.asarray(
        _policy_actions(agent, base_key, jnp.asarray(o, jnp.float32), e, t)
    )


def run(cfg: RunConfig, agent_class, agent_config, flags: dict | None = None) -> list[dict]:
    """Train ``agent_class`` with ``agent_config`` as ``cfg`` says; return per-seed summaries.

    Everything a user can get wrong is checked before the dataset is loaded.
    """
    check_run_config(cfg)
    config_checks.check_agent_config(agent_config)
    resolved = registry.resolve(cfg.env_name)
    print(
        f'Environment: {cfg.env_name!r} -> {resolved.name!r} ({resolved.family.name}).', flush=True
    )
    bundle = registry.load(resolved, cfg.data)
    check_dataset(bundle.train_dataset, f'{resolved.name} training data')
    print(f'Dataset: {_describe_source(bundle.provenance)}', flush=True)
    flags = {**(flags or {}), 'env_name': bundle.env_name, 'requested_env_name': cfg.env_name}
    flags.setdefault('agent', _plain_config(agent_config))
    return Run(cfg, agent_class, agent_config, bundle, flags).execute()


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _score(row: dict) -> float:
    """Ranking key for 'best evaluation': success, then return."""
    return row.get('evaluation/success', -math.inf), row.get('evaluation/episode.return', -math.inf)


def _key_metrics(infos: dict[str, np.ndarray]) -> dict[str, str]:
    """A few metrics of the first seed's last update for the progress bar."""
    names = ('critic/critic_loss', 'actor/bc_loss', 'actor/bc_flow_loss', 'actor/q')
    return {n.split('/')[-1]: f'{float(infos[n][0]):.3g}' for n in names if n in infos}


def _describe_source(provenance: dict) -> str:
    """One line on where the training data came from."""
    extras = {k: v for k, v in provenance.items() if k in ('path', 'episodes', 'seed', 'size')}
    return f'{provenance.get("source", "unknown")} {extras}'


def _plain_config(config) -> dict:
    """A JSON-ready copy of an agent config (ConfigDict or FrozenDict)."""
    as_dict = config.to_dict() if hasattr(config, 'to_dict') else flax.core.unfreeze(config)
    return json.loads(json.dumps(as_dict, default=str))


def _write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=2, default=_json_default)
    os.replace(tmp, path)


def _json_default(value):
    """JSON fallback for numpy scalars and other objects."""
    return value.item() if hasattr(value, 'item') else str(value)


def _read_csv(path: str) -> list[dict]:
    """Rows of a CSV log as dicts."""
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _save_videos(run_dir: str, step: int, videos: list[list[np.ndarray]]) -> None:
    """Save rendered episodes as GIFs in ``run_dir/videos``."""
    if not videos:
        return
    import imageio.v2 as imageio

    os.makedirs(os.path.join(run_dir, 'videos'), exist_ok=True)
    for index, frames in enumerate(videos):
        imageio.mimsave(os.path.join(run_dir, 'videos', f'step{step}_episode{index}.gif'), frames)
    logging.info('saved %d videos at step %d', len(videos), step)
