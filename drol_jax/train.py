"""The training run: checks, data, agents, compiled update blocks, logs, evaluation, checkpoints.

Offline training runs in blocks of updates fused into one compiled call (``drol_jax.updates``)
on device-resident data; blocks end exactly at the log, evaluation and checkpoint steps, so
those happen at the same steps as in FQL's one-call-per-update loop (including FQL's evaluation
after the first update). Several seeds train in one process with ``jax.vmap`` over stacked agent
states. Online fine-tuning (optional) follows FQL's per-step loop. The loop itself is
``Training.execute``: block -> log -> evaluate -> save, until done or signalled.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Any

import flax
import jax
import numpy as np
from tqdm.auto import tqdm

from drol_jax import presets, seeding
from drol_jax.agent_file import AgentFile
from drol_jax.checkpoints import restore_agent, saved_steps
from drol_jax.data import ReplayBuffer, check_dataset, gather, sample_indices, to_device
from drol_jax.envs import registry
from drol_jax.envs.base import DATASET_KEYS, DataOptions, EnvBundle
from drol_jax.errors import ConfigError, NonFiniteLossError
from drol_jax.evaluation import Evaluator
from drol_jax.hyperparameters import check_agent_config
from drol_jax.run_folders import RunFolders
from drol_jax.updates import (
    first_nonfinite,
    make_train_block,
    pad_seeds,
    replicate,
    seed_mesh,
    shard_over_seeds,
    stack_agents,
    unstack_agent,
)

# Updates timed at the start to state the expected duration (after compilation).
CALIBRATION_UPDATES = 100


@dataclasses.dataclass
class RunConfig:
    """Everything about a run except the agent's hyperparameters (FQL's flags plus ours)."""

    env_name: str = 'cube-single'
    seed: int = 0
    num_seeds: int = 1  # Seeds seed, seed+1, ... trained together in one process.
    run_group: str = 'debug'
    save_dir: str = 'exp'
    preset: str = 'paper'  # Published per-task settings: paper, paper-tuned or none.
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


def check_run_config(cfg: RunConfig) -> None:
    """Reject invalid run flags (one sentence each) before anything is loaded."""
    at_least = {
        'seed': 0,
        'offline_steps': 0,
        'online_steps': 0,
        'eval_episodes': 0,
        'video_episodes': 0,
        'eval_interval': 0,
        'save_interval': 0,
        'block_size': 0,
        'log_interval': 1,
        'num_seeds': 1,
        'eval_num_envs': 1,
        'video_frame_skip': 1,
    }
    for name, minimum in at_least.items():
        if getattr(cfg, name) < minimum:
            raise ConfigError(f'--{name} must be >= {minimum}, got {getattr(cfg, name)}.')
    if cfg.preset not in presets.PRESETS:
        raise ConfigError(
            f'--preset must be one of {", ".join(presets.PRESETS)}, got {cfg.preset!r}.'
        )
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


class StopFlag:
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
class LoopState:
    """What the loop carries from block to block: the step, the stacked agents, their keys."""

    step: int
    agents: Any
    keys: jax.Array
    replay: ReplayBuffer | None = None


class Training:
    """One training run (possibly several seeds) from resolved data to summary."""

    def __init__(self, cfg: RunConfig, agent: AgentFile, agent_config, bundle: EnvBundle, folders):
        self.cfg = cfg
        self.agent = agent
        self.agent_config = agent_config
        self.bundle = bundle
        self.folders: RunFolders = folders
        self.seeds = folders.seeds
        self.mesh = seed_mesh(cfg.num_seeds)
        # Seed slots: the seeds, padded to a multiple of the devices that train them.
        self.num_slots = -(-cfg.num_seeds // self.mesh.size) * self.mesh.size
        self.batch_size = int(agent_config['batch_size'])
        self.total_steps = cfg.offline_steps + cfg.online_steps
        self.evaluator = Evaluator(
            bundle.make_env,
            cfg.eval_episodes,
            cfg.eval_num_envs,
            bundle.normalize_score,
            cfg.video_episodes,
            cfg.video_frame_skip,
            cfg.progress,
        )
        self.bar = None  # Opened once the update block is compiled.
        self.speed_clock = (time.time(), 0)
        self.data = None  # The training data on the devices, once compiled.
        self.calibrated = False

    def execute(self, flags: dict) -> list[dict]:
        """Train, evaluate, checkpoint; return one summary dict per seed."""
        state = self.start()
        start_step, started = state.step, time.time()
        wandb = None
        if self.cfg.wandb_mode != 'disabled':
            wandb = dict(
                mode=self.cfg.wandb_mode, project=self.cfg.wandb_project, group=self.cfg.run_group
            )
        self.folders.open_logs(state.step, flags, wandb)
        with StopFlag() as stop, self.evaluator:
            if state.step < self.cfg.offline_steps:
                train_block = self.compile_block(state)
                while state.step < self.cfg.offline_steps and stop.signal_name is None:
                    end = next_boundary(state.step, self.cfg.offline_steps, self.cfg)
                    infos = self.offline_block(train_block, state, end)
                    self.after_block(state, infos)
            if self.cfg.online_steps and stop.signal_name is None:
                self.online_phase(state, stop)
            if stop.signal_name is not None:
                self.save(state)
            self.close_bar()
        summaries = self.finish(state, stop.signal_name, time.time() - started, start_step)
        self.folders.close()
        return summaries

    # -- the pieces of the loop ----------------------------------------------------------------

    def start(self) -> LoopState:
        """Fresh agents (one per seed, stacked) or, with ``--resume``, the latest checkpoint."""
        dataset = self.bundle.train_dataset
        ex_obs, ex_act = dataset['observations'][:1], dataset['actions'][:1]
        agents = [
            self.agent.agent_class.create(s, ex_obs, ex_act, self.agent_config) for s in self.seeds
        ]
        if self.cfg.restore_path:
            agents = [
                restore_agent(a, self.cfg.restore_path, self.cfg.restore_epoch) for a in agents
            ]
        state = LoopState(0, stack_agents(agents), seeding.sampler_keys(self.seeds))
        if self.cfg.resume:
            candidates = self.folders.resume_candidates()
            target = {'agents': state.agents, 'sampler_keys': state.keys, 'step': 0}
            if candidates[0] > self.cfg.offline_steps:
                state.replay = self.make_replay_buffer()
                target['replay'] = state.replay.state_dict()
            state.step, restored = self.folders.load_latest(candidates, target)
            state.agents, state.keys = restored['agents'], restored['sampler_keys']
            if state.replay is not None:
                state.replay.load_state_dict(restored['replay'])
            print(f'Resuming {self.folders.folders[0].run_dir} from step {state.step}.', flush=True)
        else:
            self.folders.refuse_overwrite()
        state.agents, state.keys = shard_over_seeds(
            pad_seeds((state.agents, state.keys), self.num_slots), self.mesh
        )
        return state

    def compile_block(self, state: LoopState):
        """Compile the fused update block once, before the clock of the progress bar starts."""
        self.data = replicate(to_device(self.bundle.train_dataset), self.mesh)
        began = time.time()
        compiled = make_train_block(self.batch_size).lower(state.agents, state.keys, self.data, 1)
        compiled = compiled.compile()
        print(f'Compiled the update block in {time.time() - began:.1f} s.', flush=True)
        self.open_bar(state.step)
        return compiled

    def offline_block(self, train_block, state: LoopState, end: int) -> dict[str, np.ndarray]:
        """Run the updates up to ``end``; raise ``NonFiniteLossError`` on NaN/inf metrics."""
        calibrating = not self.calibrated and end - state.step > CALIBRATION_UPDATES
        if calibrating:  # Any split of a block gives the same numbers; time the first piece.
            end = state.step + CALIBRATION_UPDATES
            began = time.time()
        result = train_block(state.agents, state.keys, self.data, end - state.step)
        infos = jax.tree_util.tree_map(np.asarray, result.last_info)
        bad = first_nonfinite(
            {k: np.asarray(v)[: len(self.seeds)] for k, v in result.first_bad.items()}
        )
        if bad is not None:
            name, seed_index, offset = bad
            raise NonFiniteLossError(
                f'non-finite training/{name} at step {state.step + offset + 1} (seed '
                f'{self.seeds[seed_index]}); stopped, {self.last_checkpoint(seed_index)}.'
            )
        if calibrating:
            self.calibrated = True
            self.announce_duration(CALIBRATION_UPDATES / max(time.time() - began, 1e-9), end)
        state.agents, state.keys, state.step = result.agents, result.keys, end
        return infos

    def after_block(self, state: LoopState, infos: dict[str, np.ndarray]) -> None:
        """Log, evaluate and checkpoint whatever is due at ``state.step``."""
        self.bar.update(state.step - self.bar.n)
        if state.step % self.cfg.log_interval == 0 or state.step == self.cfg.offline_steps:
            self.log_training(state, infos)
        due = self.cfg.eval_interval and (
            state.step == 1 or state.step % self.cfg.eval_interval == 0
        )
        if due and self.cfg.eval_episodes:
            self.evaluate(state)
        saving = self.cfg.save_interval and state.step % self.cfg.save_interval == 0
        if saving or state.step == self.total_steps:
            self.save(state)

    def online_phase(self, state: LoopState, stop: StopFlag) -> None:
        """FQL's offline-to-online loop: act, store, update once per environment step."""
        if self.bar is None:
            self.open_bar(state.step)
        agent = unstack_agent(state.agents, 0)
        state.replay = state.replay or self.make_replay_buffer()
        dataset, seed = self.bundle.train_dataset, self.seeds[0]
        env = self.bundle.make_env()
        host_rng = seeding.online_host_rng(seed, state.step)
        observation, _ = env.reset(seed=seed + state.step)
        half = self.batch_size // 2
        while state.step < self.total_steps and stop.signal_name is None:
            state.step += 1
            key = seeding.online_action_key(seed, state.step)
            action = np.asarray(agent.sample_actions(observation, seed=key))
            next_observation, reward, terminated, truncated, _ = env.step(action)
            state.replay.add(
                {
                    'observations': observation,
                    'actions': action,
                    'rewards': reward + self.bundle.online_reward_shift,
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
                from_replay = state.replay.sample(host_rng, self.batch_size - half)
                batch = {k: np.concatenate([from_data[k], from_replay[k]]) for k in DATASET_KEYS}
            else:
                batch = state.replay.sample(host_rng, self.batch_size)
            agent, info = agent.update(batch)
            state.agents = stack_agents([agent])
            infos = {k: np.asarray(v).reshape(1) for k, v in info.items()}
            self.after_block(state, infos)

    def make_replay_buffer(self) -> ReplayBuffer:
        """FQL's fine-tuning buffer: empty (balanced sampling) or seeded with the dataset."""
        dataset = self.bundle.train_dataset
        if self.cfg.balanced_sampling:
            return ReplayBuffer({k: dataset[k][0] for k in DATASET_KEYS}, self.cfg.buffer_size)
        return ReplayBuffer.from_dataset(dataset, self.cfg.buffer_size)

    # -- what happens at the boundaries ---------------------------------------------------------

    def log_training(self, state: LoopState, infos: dict[str, np.ndarray]) -> None:
        """Log the last update's metrics (as FQL does) plus validation losses and speed."""
        now = time.time()
        last_time, last_step = self.speed_clock
        speed = (state.step - last_step) / max(now - last_time, 1e-9)
        self.speed_clock = (now, state.step)
        for index, folder in enumerate(self.folders.folders):
            row = {f'training/{k}': float(v[index]) for k, v in infos.items()}
            row |= self.validation_row(state, index)
            row['time/updates_per_second'] = speed * len(self.seeds)
            folder.record_train(row, state.step)
        shown = {
            name.split('/')[-1]: f'{float(infos[name][0]):.3g}'
            for name in self.agent.progress_metrics
            if name in infos
        }
        self.bar.set_postfix(shown, refresh=False)

    def validation_row(self, state: LoopState, index: int) -> dict[str, float]:
        """FQL's ``validation/...`` losses on a batch of the validation split (if any)."""
        val = self.bundle.val_dataset
        if val is None:
            return {}
        agent = unstack_agent(state.agents, index)
        key = jax.random.fold_in(jax.random.PRNGKey(self.seeds[index]), state.step)
        idx = np.asarray(sample_indices(key, len(val['observations']), self.batch_size))
        _, info = agent.total_loss(gather(val, idx), grad_params=agent.network.params)
        return {f'validation/{k}': float(v) for k, v in info.items()}

    def evaluate(self, state: LoopState) -> None:
        """Evaluate every seed's policy; one printed line per seed."""
        for index, folder in enumerate(self.folders.folders):
            agent = unstack_agent(state.agents, index)
            row = self.evaluator.evaluate(agent, folder.seed, state.step, folder.run_dir)
            folder.record_eval(row, state.step)
            self.bar.write(f'step {state.step} seed {folder.seed}: {_describe_eval(row)}')

    def save(self, state: LoopState) -> None:
        """Checkpoint every seed's folder; only real seeds are saved (not the padding slots)."""
        agents, keys = jax.tree_util.tree_map(
            lambda x: x[: len(self.seeds)], (state.agents, state.keys)
        )
        checkpoint = {'agents': agents, 'sampler_keys': keys, 'step': state.step}
        if state.replay is not None:
            checkpoint['replay'] = state.replay.state_dict()
        self.folders.save(state.step, checkpoint)

    def last_checkpoint(self, seed_index: int) -> str:
        """Where the last good checkpoint of a seed is, in words."""
        run_dir = self.folders.folders[seed_index].run_dir
        saved = saved_steps(run_dir)
        kept = f'last good checkpoint: step {saved[-1]}' if saved else 'no checkpoint yet'
        return f'{kept} in {run_dir}'

    # -- progress and the closing lines ---------------------------------------------------------

    def open_bar(self, step: int) -> None:
        """The progress bar, opened after compilation so its rate and ETA are the training's."""
        self.bar = tqdm(
            total=self.total_steps,
            initial=step,
            desc='training',
            disable=not self.cfg.progress,
            dynamic_ncols=True,
        )
        self.speed_clock = (time.time(), step)

    def close_bar(self) -> None:
        """Close the progress bar, if one was opened."""
        if self.bar is not None:
            self.bar.close()

    def announce_duration(self, updates_per_second: float, step: int) -> None:
        """State the expected training time from the measured speed."""
        remaining = self.cfg.offline_steps - step
        self.bar.write(
            f'Measured {updates_per_second:.1f} updates/s: {remaining:,} more offline updates '
            f'take about {_duration(remaining / updates_per_second)} (evaluation not included).'
        )

    def finish(self, state, signal_name, wall: float, start_step: int) -> list[dict]:
        """Write ``summary.json`` per seed and print the closing lines."""
        summaries = self.folders.write_summaries(
            {
                'env_name': self.bundle.env_name,
                'agent_name': self.agent_config['agent_name'],
                'step': state.step,
                'complete': state.step >= self.total_steps,
                'preempted_by': signal_name,
                'wall_time_s': wall,
                'updates_per_second': (state.step - start_step) * len(self.seeds) / max(wall, 1e-9),
                'dataset': self.bundle.provenance,
            }
        )
        if signal_name is not None:
            print(
                f'Received {signal_name} at step {state.step}: checkpoint saved, logs flushed. '
                'Continue with the same command plus --resume.',
                flush=True,
            )
        for summary, folder in zip(summaries, self.folders.folders, strict=True):
            final, best = summary['final_eval'], summary['best_eval']
            scores = 'no evaluation'
            if final is not None:
                scores = (
                    f'final {_describe_eval(final)} at step {final["step"]}; '
                    f'best {_describe_eval(best)} at step {best["step"]}'
                )
            outcome = 'Stopped' if signal_name else 'Done'
            print(
                f'{outcome}: seed {folder.seed}, {state.step:,} steps in {_duration(wall)}; '
                f'{scores}. Run folder: {folder.run_dir}',
                flush=True,
            )
        return summaries


def run(
    cfg: RunConfig,
    agent: AgentFile,
    agent_config,
    overrides: dict[str, Any] | None = None,
    flags: dict | None = None,
) -> list[dict]:
    """Train the agent of an agent file as ``cfg`` says; return per-seed summaries.

    ``agent_config`` holds the file's defaults with the command line's ``--agent.*`` values
    (``overrides``, which win over the preset). Everything a user can get wrong is checked
    before the dataset is loaded.
    """
    overrides = dict(overrides or {})
    check_run_config(cfg)
    check_agent_config(agent_config, agent.hyperparameter_checks)
    resolved = registry.resolve(cfg.env_name)
    print(
        f'Environment: {cfg.env_name!r} -> {resolved.name!r} ({resolved.family.name}).', flush=True
    )
    agent_name = agent_config['agent_name']
    applied = presets.settings_for(agent, agent_name, resolved.task_family, cfg.preset)
    presets.apply_preset(agent_config, applied, overrides)
    check_agent_config(agent_config, agent.hyperparameter_checks)
    print(f'Settings: {applied.note}', flush=True)
    seeds = [cfg.seed + i for i in range(cfg.num_seeds)]
    folders = RunFolders(cfg.save_dir, cfg.run_group, resolved.name, agent_name, seeds)
    folders.check_writable()

    bundle = registry.load(resolved, cfg.data)
    check_dataset(bundle.train_dataset, f'{resolved.name} training data')
    print(f'Dataset: {_describe_source(bundle.provenance)}', flush=True)
    flags = {
        **(flags or {}),
        'env_name': bundle.env_name,
        'requested_env_name': cfg.env_name,
        'agent': _plain_config(agent_config),
        'preset': cfg.preset,
        'preset_values': applied.values,
        'agent_overrides': overrides,
        'run_label': presets.run_label(applied, overrides),
        'dataset': bundle.provenance,
    }
    return Training(cfg, agent, agent_config, bundle, folders).execute(flags)


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _describe_eval(row: dict) -> str:
    """'success 0.42, return 12.3' from an evaluation row."""
    parts = []
    for key, name in (
        ('evaluation/success', 'success'),
        ('evaluation/episode.return', 'return'),
        ('evaluation/normalized_return', 'normalized return'),
    ):
        if key in row:
            parts.append(f'{name} {row[key]:.3g}')
    return ', '.join(parts)


def _duration(seconds: float) -> str:
    """A duration as '13.0 h', '4.2 min' or '12 s'."""
    if seconds >= 3600:
        return f'{seconds / 3600:.1f} h'
    if seconds >= 60:
        return f'{seconds / 60:.1f} min'
    return f'{seconds:.0f} s'


def _describe_source(provenance: dict) -> str:
    """One line on where the training data came from, its label first."""
    shown = ('path', 'episodes', 'seed', 'size', 'why')
    extras = {k: v for k, v in provenance.items() if k in shown}
    return f'{provenance.get("source", "unknown")} {extras}'


def _plain_config(config) -> dict:
    """A JSON-ready copy of an agent config (ConfigDict or FrozenDict)."""
    as_dict = config.to_dict() if hasattr(config, 'to_dict') else flax.core.unfreeze(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in as_dict.items()}
