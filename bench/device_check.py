"""Device check: how fast DROL and FQL train on this machine's accelerator; one JSON, one table.

    pip install -e ".[cuda12]"
    python bench/device_check.py            # paper sizes; meant to finish in < 8 min on one GPU
    python bench/device_check.py --quick    # a reduced form that runs on a CPU (the slow tests)

It measures, each in a fresh process so that every figure is one job's:

- updates/s for DROL(16), DROL(64) and FQL at the paper's sizes (hidden 4x512, batch 256,
  observation 28, action 5), in fused blocks on device-resident data (what main.py runs) and in
  the host loop (one jit call per update on batches gathered on the host: FQL's loop for one
  seed, the same loop vmapped over the seeds for more), with 1, 8 and 32 seeds vmapped, and
  the compilation time of each program;
- the same fused 8-seed job with 2 and 4 jobs side by side on the GPU (separate processes,
  each with the memory share the sweep launcher gives it), and each job's peak memory;
- vectorised evaluation: environment steps/s of ``EnvWorkers`` with a DROL(16) policy.

It writes ``device_check.json`` (``python -m drol_jax.sweep ... --device_check`` reads it) and
``device_check.md`` into ``--out``, and checks the targets of ``bench/RESULTS.md``: fused blocks
at least 5x the host loop, 32 seeds at least 8x one seed's throughput, the 400-run DROL(16)
OGBench sweep in under 8 hours on one 8-GPU node; where one is missed the table names the part
that limits it (compilation, host transfer, evaluation or the update). Measurements that would
overrun ``--budget_s`` are skipped and listed as such.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STARTED = time.time()
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from drol_jax.sweep import cost, gpus  # noqa: E402 - needs the path above; imports no jax.

AGENTS = (('drol', 16), ('drol', 64), ('fql', None))
PAPER = {'hidden': [512, 512, 512, 512], 'batch': 256, 'seeds': [1, 8, 32], 'sharing': [2, 4]}
QUICK = {'hidden': [32], 'batch': 32, 'seeds': [1, 2], 'sharing': [2]}
SWEEP_JOBS, SWEEP_UPDATES = 50, 1_000_000
SWEEP_EVALUATIONS, SWEEP_EPISODES, NODE_GPUS, TARGET_HOURS = 11, 50, 8, 8.0
JOB_DATASET_SIZE = 1_000_000  # Transitions of an OGBench dataset: what a real job holds.


def job_seeds(sizes: dict) -> int:
    """Seeds of the jobs that share a GPU and of the sweep plan: the sweep's 8 (quick: 2)."""
    return max(sizes['seeds'][:2])


def agent_name(agent: str, k: int | None) -> str:
    """``DROL(16)`` or ``FQL``."""
    return f'DROL({k})' if agent == 'drol' else agent.upper()


# ------------------------------------------------------------------------------ the workers


def worker_setup(spec: dict):
    """The worker's jax, bench helpers, data (host and device) and agents.

    One agent per (agent, K) of the spec, and a function that stacks copies of one into a seed
    axis.
    """
    import jax
    import update_speed

    from drol_jax.data import random_transitions, to_device
    from drol_jax.updates import stack_agents

    dataset = random_transitions(
        spec['dataset_size'], update_speed.OBS_DIM, update_speed.ACTION_DIM
    )
    base = {
        (agent, k): update_speed.make_agent(agent, k or 0, tuple(spec['hidden']), spec['batch'])
        for agent, k in spec['agents']
    }

    # Seeds only change the numbers, not the work: copies of one agent make the seed axis. Each
    # runner gets its own stack, because the fused block donates (deletes) its inputs.
    def stacked(key, seeds):
        return stack_agents([base[key]] * seeds)

    return jax, update_speed, dataset, to_device(dataset), base, stacked


def peak_bytes(jax) -> int | None:
    """The peak device memory of this process so far (None where the backend does not say)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get('peak_bytes_in_use')


def host_vmapped_runner(jax, agents, dataset, updates: int, batch: int, seeds: int):
    """The host loop for several seeds: one vmapped jit call per update, batches from the host."""
    import numpy as np

    update = jax.jit(jax.vmap(lambda agent, b: agent.update(b)))
    rng = np.random.default_rng(0)
    size = len(dataset['observations'])
    state = {'agents': agents}

    def run():
        for _ in range(updates):
            indices = rng.integers(size, size=(seeds, batch))
            batch_arrays = {k: v[indices] for k, v in dataset.items()}
            state['agents'], _ = update(state['agents'], batch_arrays)
        jax.block_until_ready(state['agents'])

    return run


def single_worker(spec: dict) -> dict:
    """Fused and host-loop rates of each (agent, seeds) of the spec, one job at a time."""
    jax, update_speed, dataset, data, base, stacked = worker_setup(spec)
    runs = []
    for (agent, k), seeds in [(key, s) for key in base for s in spec['seeds']]:
        fused = update_speed.fused_runner(
            stacked((agent, k), seeds), data, spec['updates'], spec['batch']
        )
        runs.append(((agent, k, 'fused', seeds), fused))
        if seeds == 1:
            host = update_speed.host_runner(base[agent, k], dataset, spec['updates'], spec['batch'])
        else:
            host = host_vmapped_runner(
                jax, stacked((agent, k), seeds), dataset, spec['updates'], spec['batch'], seeds
            )
        runs.append(((agent, k, 'host', seeds), host))

    def first_call(run):
        began = time.perf_counter()
        run()
        return time.perf_counter() - began

    # Compile every program at once (XLA compiles on several cores); then time one at a time.
    with ThreadPoolExecutor(max_workers=min(len(runs), os.cpu_count() or 1)) as pool:
        firsts = list(pool.map(first_call, [run for _, run in runs]))
    rows = []
    for ((agent, k, mode, seeds), run), first in zip(runs, firsts, strict=True):
        times = update_speed.time_round_robin([run], spec['repeats'])[0]
        block = statistics.median(times)
        rows.append(
            {
                'agent': agent,
                'num_candidates': k,
                'mode': mode,
                'seeds': seeds,
                'jobs_per_gpu': 1,
                'hidden': spec['hidden'],
                'batch_size': spec['batch'],
                'seconds_per_update': block / spec['updates'],
                'updates_per_second': spec['updates'] / block,
                'seed_updates_per_second': seeds * spec['updates'] / block,
                'compile_s': max(first - block, 0.0),
                'peak_memory_bytes': None,
            }
        )
    from drol_jax.analysis.runtime import machine_description

    device = jax.local_devices()[0]
    return {
        'rows': rows,
        'device': {
            'platform': device.platform,
            'kind': device.device_kind,
            'count': jax.local_device_count(),
        },
        'machine': machine_description(),
        'jax': jax.__version__,
    }


def shared_worker(spec: dict) -> dict:
    """One 8-seed fused job among ``jobs_per_gpu`` started together; waits for the go file."""
    jax, update_speed, _, data, base, stacked = worker_setup(spec)
    ((agent, k),) = base
    run = update_speed.fused_runner(
        stacked((agent, k), spec['seeds'][0]), data, spec['updates'], spec['batch']
    )
    began = time.perf_counter()
    run()
    compile_s = time.perf_counter() - began
    Path(spec['ready']).write_text('ready')
    while not Path(spec['go']).exists():
        time.sleep(0.01)
    blocks, began = 0, time.perf_counter()
    while blocks == 0 or time.perf_counter() - began < spec['duration_s']:
        run()
        blocks += 1
    elapsed = time.perf_counter() - began
    return {
        'agent': agent,
        'num_candidates': k,
        'mode': 'fused',
        'seeds': spec['seeds'][0],
        'jobs_per_gpu': spec['jobs_per_gpu'],
        'hidden': spec['hidden'],
        'batch_size': spec['batch'],
        'seconds_per_update': elapsed / (blocks * spec['updates']),
        'updates_per_second': blocks * spec['updates'] / elapsed,
        'seed_updates_per_second': spec['seeds'][0] * blocks * spec['updates'] / elapsed,
        'compile_s': compile_s,
        'peak_memory_bytes': peak_bytes(jax),
        'memory_env': {k: os.environ[k] for k in gpus.MEMORY_VARIABLES if k in os.environ},
    }


def evaluation_worker(spec: dict) -> dict:
    """Environment steps/s of vectorised evaluation (``EnvWorkers``) with a DROL(16) policy."""
    import functools

    import jax
    import numpy as np

    from agents import drol
    from drol_jax.envs import ogbench, registry, toy
    from drol_jax.evaluation import EnvWorkers, make_policy

    resolved = registry.resolve(spec['env'])
    if resolved.family is toy.FAMILY:
        make_env = functools.partial(toy.ToyEnv, resolved.name)
    else:  # An OGBench task: its evaluation env needs no dataset.
        make_env = functools.partial(ogbench.make_eval_env, resolved.name)
    env = make_env()
    config = drol.get_config()
    config.actor_hidden_dims = config.value_hidden_dims = tuple(spec['hidden'])
    examples = (
        np.zeros((1, *env.observation_space.shape), np.float32),
        np.zeros((1, *env.action_space.shape), np.float32),
    )
    agent = jax.jit(lambda: drol.DROLAgent.create(0, *examples, config))()
    policy = make_policy(agent, 0, 0)
    began = time.perf_counter()
    with EnvWorkers(make_env, spec['num_envs']) as workers:
        startup = time.perf_counter() - began
        workers.run_episodes(policy, spec['num_envs'], 0, False)  # Compiles the policy.
        began = time.perf_counter()
        episodes = workers.run_episodes(policy, spec['episodes'], 1, False)
        elapsed = time.perf_counter() - began
    steps = sum(int(e['episode.length']) for e in episodes)
    return {
        'env': resolved.name,
        'num_envs': spec['num_envs'],
        'episodes': spec['episodes'],
        'episode_length': max(int(e['episode.length']) for e in episodes),
        'env_steps': steps,
        'env_steps_per_second': steps / elapsed,
        'startup_s': startup,
    }


WORKERS = {'single': single_worker, 'shared': shared_worker, 'evaluation': evaluation_worker}


def worker_main(kind: str, spec_path: str) -> None:
    """Run one worker and write its result beside its spec."""
    spec = json.loads(Path(spec_path).read_text())
    result = WORKERS[kind](spec)
    Path(spec['out']).write_text(json.dumps(result))


# ------------------------------------------------------------------------- the orchestrator


class DeviceCheck:
    """Runs the workers within the time budget and collects what they measured."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.sizes = {**(QUICK if args.quick else PAPER)}
        for name, option in (('hidden', 'hidden'), ('batch', 'batch'), ('seeds', 'seeds')):
            if getattr(args, option):
                self.sizes[name] = getattr(args, option)
        if args.jobs_per_gpu:
            self.sizes['sharing'] = args.jobs_per_gpu
        self.folder = Path(tempfile.mkdtemp(prefix='device_check_'))
        self.skipped: list[str] = []
        visible, _ = gpus.visible_gpus()
        # Every figure is one GPU's: the workers see the first visible GPU only.
        self.env = {
            **os.environ,
            **({'CUDA_VISIBLE_DEVICES': visible[0].device} if visible else {}),
        }
        # Workers compile the same programs: a shared compilation cache compiles each once.
        self.env.setdefault('JAX_COMPILATION_CACHE_DIR', str(self.folder / 'xla_cache'))
        self.env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
        self.env.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

    def remaining(self) -> float:
        """Seconds left of the budget."""
        return self.args.budget_s - (time.time() - STARTED)

    def spec(self, name: str, agents, **fields) -> Path:
        """Write a worker's spec file; its result goes to ``<name>.out.json``."""
        spec = {
            'agents': [list(a) for a in agents],
            'hidden': self.sizes['hidden'],
            'batch': self.sizes['batch'],
            'seeds': self.sizes['seeds'],
            'updates': self.args.updates,
            'repeats': self.args.repeats,
            'dataset_size': 10_000 if self.args.quick else JOB_DATASET_SIZE,
            'out': str(self.folder / f'{name}.out.json'),
            **fields,
        }
        path = self.folder / f'{name}.json'
        path.write_text(json.dumps(spec))
        return path

    def start(self, kind: str, spec: Path, extra_env: dict | None = None) -> subprocess.Popen:
        """Start one worker process (its output goes to its log file)."""
        log = open(spec.with_suffix('.log'), 'w')  # noqa: SIM115 - the child holds it.
        return subprocess.Popen(
            [sys.executable, __file__, '--worker', kind, str(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(extra_env or {})},
            cwd=HERE.parent,
        )

    def finish(self, process: subprocess.Popen, spec: Path, what: str, deadline: float):
        """Wait for a worker until ``deadline``; its result, or None (noted in ``skipped``)."""
        try:
            process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            self.skipped.append(f'{what}: stopped at the time budget')
            return None
        out = Path(json.loads(spec.read_text())['out'])
        if process.returncode != 0 or not out.exists():
            tail = spec.with_suffix('.log').read_text(errors='replace').strip().splitlines()[-1:]
            self.skipped.append(f'{what}: worker failed ({"; ".join(tail) or process.returncode})')
            return None
        return json.loads(out.read_text())

    def run_one(self, kind: str, name: str, what: str, agents, **fields):
        """One worker from start to result, if the budget leaves time for it."""
        if self.remaining() < self.args.min_phase_s:
            self.skipped.append(f'{what}: not started, time budget spent')
            return None
        spec = self.spec(name, agents, **fields)
        return self.finish(self.start(kind, spec), spec, what, time.time() + self.remaining())

    def singles(self) -> tuple[list[dict], dict]:
        """Fused and host-loop rows of every agent (one process per agent on a GPU)."""
        groups = [AGENTS] if self.args.quick else [(a,) for a in AGENTS]
        rows, info = [], {}
        for index, group in enumerate(groups):
            names = ', '.join(agent_name(*a) for a in group)
            result = self.run_one('single', f'single{index}', f'rates of {names}', group)
            if result:
                rows += result['rows']
                info = {k: v for k, v in result.items() if k != 'rows'}
        return rows, info

    def shared(self) -> list[dict]:
        """One row per job of every (agent, jobs per GPU) measured side by side."""
        rows = []
        agents = AGENTS[:1] if self.args.quick else AGENTS
        for jobs in self.sizes['sharing']:
            for agent in agents:
                what = f'{agent_name(*agent)} x {jobs} jobs per GPU'
                if self.remaining() < self.args.min_phase_s:
                    self.skipped.append(f'{what}: not started, time budget spent')
                    continue
                rows += self.shared_group(agent, jobs, what)
        return rows

    def shared_group(self, agent, jobs: int, what: str) -> list[dict]:
        """``jobs`` processes of one 8-seed job each, released together, timed together."""
        go = self.folder / f'go_{agent[0]}{agent[1]}_{jobs}'
        tag = f'shared_{agent[0]}{agent[1]}_{jobs}'
        seeds = [job_seeds(self.sizes)]
        specs = [
            self.spec(
                f'{tag}_{i}',
                [agent],
                seeds=seeds,
                jobs_per_gpu=jobs,
                ready=str(self.folder / f'{tag}_{i}.ready'),
                go=str(go),
                duration_s=self.args.shared_s,
            )
            for i in range(jobs)
        ]
        memory = gpus.memory_env(jobs, 'share')
        processes = [self.start('shared', spec, memory) for spec in specs]
        deadline = time.time() + self.remaining()
        readies = [Path(json.loads(s.read_text())['ready']) for s in specs]
        while time.time() < deadline and not all(r.exists() for r in readies):
            if any(p.poll() is not None for p in processes):
                break
            time.sleep(0.05)
        go.write_text('go')
        results = [self.finish(p, s, what, deadline) for p, s in zip(processes, specs, strict=True)]
        if not all(results):
            return []
        # One row per setting: the mean job, the largest peak and compilation; every job's rate.
        row = {**results[0]}
        for name in ('seconds_per_update', 'updates_per_second', 'seed_updates_per_second'):
            row[name] = statistics.mean(r[name] for r in results)
        for name in ('compile_s', 'peak_memory_bytes'):
            values = [r[name] for r in results if r[name] is not None]
            row[name] = max(values) if values else None
        row['per_job_updates_per_second'] = [r['updates_per_second'] for r in results]
        return [row]

    def evaluation(self) -> dict | None:
        """Vectorised evaluation steps/s (toy task with --quick, else cube-single)."""
        num_envs = 2 if self.args.quick else min(50, 2 * (os.cpu_count() or 1))
        return self.run_one(
            'evaluation',
            'evaluation',
            'vectorised evaluation',
            AGENTS[:1],
            env='toy-multimodal' if self.args.quick else 'cube-single',
            num_envs=num_envs,
            episodes=num_envs,
        )

    def run(self) -> dict:
        """Every measurement, the targets, and the result as one dict (the JSON)."""
        rows, info = self.singles()
        evaluation = self.evaluation()
        rows += self.shared()
        shutil.rmtree(self.folder, ignore_errors=True)
        result = {
            'tool': cost.DEVICE_CHECK_TOOL,
            'quick': self.args.quick,
            'date': time.strftime('%Y-%m-%d %H:%M:%S'),
            **info,
            'sizes': {
                'hidden': self.sizes['hidden'],
                'batch_size': self.sizes['batch'],
                'seeds': self.sizes['seeds'],
                'jobs_per_gpu': self.sizes['sharing'],
            },
            'rates': rows,
            'evaluation': evaluation,
            'skipped': self.skipped,
        }
        result['targets'], result['sweep_plan'] = targets(result)
        result['elapsed_s'] = time.time() - STARTED
        return result


# ---------------------------------------------------------------------------- the targets


def find(rows: list[dict], agent: str, k, mode: str, seeds: int, jobs: int = 1) -> dict | None:
    """The measured row of one setting, if it was measured."""
    for row in rows:
        if (
            row['agent'],
            row['num_candidates'],
            row['mode'],
            row['seeds'],
            row['jobs_per_gpu'],
        ) == (
            agent,
            k,
            mode,
            seeds,
            jobs,
        ):
            return row
    return None


def verdict(ok: bool) -> str:
    """``pass`` or ``MISSED``."""
    return 'pass' if ok else 'MISSED'


def speedup_targets(rows: list[dict], seeds: list[int]) -> list[dict]:
    """Fused blocks >= 5x the host loop (one seed), and most seeds >= 8x one seed's throughput."""
    few, many = seeds[0], seeds[-1]
    out = []
    for agent, k in AGENTS:
        name = agent_name(agent, k)
        fused, host = find(rows, agent, k, 'fused', few), find(rows, agent, k, 'host', few)
        lots = find(rows, agent, k, 'fused', many)
        checks = [
            (
                f'{name}: fused >= 5x the host loop ({few} seed)',
                fused,
                host,
                'updates_per_second',
                5,
            ),
            (
                f'{name}: {many} seeds >= 8x one seed (fused)',
                lots,
                fused,
                'seed_updates_per_second',
                8,
            ),
        ]
        for target, fast, slow, field, goal in checks:
            if not (fast and slow):
                continue
            ratio = fast[field] / slow[field]
            fast_ms, slow_ms = 1e3 * fast['seconds_per_update'], 1e3 * slow['seconds_per_update']
            if field == 'updates_per_second':
                why = (
                    f'update: the fused loop is the update alone, {fast_ms:.3f} ms; the host loop '
                    f'adds {max(slow_ms - fast_ms, 0):.3f} ms of host transfer and dispatch; '
                    f'{goal}x needs the update under {slow_ms / goal:.3f} ms'
                )
            else:
                why = (
                    f'update: one vmapped update of {many} seeds takes {fast_ms:.3f} ms against '
                    f'{slow_ms:.3f} ms for one; {goal}x needs it under '
                    f'{many * slow_ms / goal:.3f} ms'
                )
            out.append(
                {
                    'target': target,
                    'measured': f'{ratio:.2f}x ({fast[field]:,.1f} vs {slow[field]:,.1f} '
                    f'{field.replace("_per_second", "/s").replace("_", "-")})',
                    'verdict': verdict(ratio >= goal),
                    'bottleneck': '-' if ratio >= goal else why,
                }
            )
    return out


def sweep_plan(result: dict) -> list[dict]:
    """The 400-run DROL(16) OGBench sweep on one 8-GPU node, per measured jobs-per-GPU."""
    evaluation = result.get('evaluation')
    plans = []
    seeds = job_seeds(result['sizes'])
    for row in result['rates']:
        if (row['agent'], row['num_candidates'], row['mode'], row['seeds']) != (
            'drol',
            16,
            'fused',
            seeds,
        ):
            continue
        update_s = SWEEP_UPDATES * row['seconds_per_update']
        eval_s = 0.0
        if evaluation:
            steps = SWEEP_EVALUATIONS * SWEEP_EPISODES * seeds * evaluation['episode_length']
            eval_s = steps / evaluation['env_steps_per_second']
        job_s = row['compile_s'] + update_s + eval_s
        slots = NODE_GPUS * row['jobs_per_gpu']
        wall = cost.makespan([job_s] * SWEEP_JOBS, slots)
        parts = {'compilation': row['compile_s'], 'update': update_s, 'evaluation': eval_s}
        plans.append(
            {
                'jobs_per_gpu': row['jobs_per_gpu'],
                'job_hours': {k: v / 3600 for k, v in parts.items()},
                'wall_clock_hours': wall / 3600,
                'bottleneck': max(parts, key=parts.get),
                'evaluation_counted': bool(evaluation),
            }
        )
    return sorted(plans, key=lambda p: p['jobs_per_gpu'])


def targets(result: dict) -> tuple[list[dict], list[dict]]:
    """The targets' verdicts and the node plans behind the sweep target."""
    rows, seeds = result['rates'], result['sizes']['seeds']
    out = speedup_targets(rows, seeds)
    plans = sweep_plan(result)
    if plans:
        best = min(plans, key=lambda p: p['wall_clock_hours'])
        ok = best['wall_clock_hours'] < TARGET_HOURS
        parts = ', '.join(f'{k} {v:.2f} h' for k, v in best['job_hours'].items())
        out.append(
            {
                'target': f'{SWEEP_JOBS * job_seeds(result["sizes"])}-run DROL(16) OGBench sweep < '
                f'{TARGET_HOURS:g} h on one {NODE_GPUS}-GPU node',
                'measured': f'{best["wall_clock_hours"]:.1f} h with {best["jobs_per_gpu"]} job(s) '
                f'per GPU (per job: {parts})',
                'verdict': verdict(ok),
                'bottleneck': '-' if ok else best['bottleneck'],
            }
        )
    return out, plans


# ----------------------------------------------------------------------------- the report


def markdown(result: dict) -> str:
    """The Markdown report: rates, evaluation, targets, the sweep plans, what was skipped."""
    from update_speed import print_table

    def table(headers, rows) -> str:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            print_table(headers, rows)
        return buffer.getvalue()

    sizes = result['sizes']
    hidden = 'x'.join(map(str, sizes['hidden']))
    quick = " (--quick: reduced sizes, not the paper's)" if result['quick'] else ''
    lines = [
        f'# Device check{quick}',
        '',
        f'{result.get("machine", "unknown machine")}; {describe_device(result.get("device"))}; '
        f'{result["date"]}; {result["elapsed_s"]:.0f} s in all.',
        '',
        f'## Update rates (hidden {hidden}, batch {sizes["batch_size"]}, observation 28, action 5)',
        '',
    ]
    rows = []
    for r in result['rates']:
        memory = r.get('peak_memory_bytes')
        rows.append(
            [
                agent_name(r['agent'], r['num_candidates']),
                r['mode'],
                str(r['seeds']),
                str(r['jobs_per_gpu']),
                f'{1e3 * r["seconds_per_update"]:.3f}',
                f'{r["updates_per_second"]:,.1f}',
                f'{r["seed_updates_per_second"]:,.0f}',
                f'{r["seed_updates_per_second"] * r["jobs_per_gpu"]:,.0f}',
                f'{r["compile_s"]:.1f}',
                f'{memory / 2**20:,.0f}' if memory else 'n/a',
            ]
        )
    headers = ['agent', 'mode', 'seeds', 'jobs/GPU', 'ms/update', 'updates/s']
    headers += ['seed-updates/s per job', 'per GPU', 'compile s', 'peak MB per job']
    lines.append(table(headers, rows) if rows else 'No rate was measured.\n')
    evaluation = result.get('evaluation')
    if evaluation:
        lines += ['## Vectorised evaluation', '']
        lines.append(
            table(
                ['env', 'env copies', 'episodes', 'env steps/s', 'start-up s'],
                [
                    [
                        evaluation['env'],
                        str(evaluation['num_envs']),
                        str(evaluation['episodes']),
                        f'{evaluation["env_steps_per_second"]:,.0f}',
                        f'{evaluation["startup_s"]:.1f}',
                    ]
                ],
            )
        )
    lines += ['## Targets', '']
    target_rows = [
        [t['target'], t['measured'], t['verdict'], t['bottleneck']] for t in result['targets']
    ]
    lines.append(
        table(['target', 'measured', 'verdict', 'bottleneck where missed'], target_rows)
        if target_rows
        else 'Not enough was measured to check a target.\n'
    )
    if result['sweep_plan']:
        seeds = job_seeds(result['sizes'])
        lines += [
            f'## The {SWEEP_JOBS * seeds}-run DROL(16) sweep on one {NODE_GPUS}-GPU node',
            '',
            f'{SWEEP_JOBS} jobs of {seeds} seeds, {SWEEP_UPDATES:,} updates, '
            f'{SWEEP_EVALUATIONS} evaluations of {SWEEP_EPISODES} episodes per seed'
            + (
                f' of up to {evaluation["episode_length"]} steps ({evaluation["env"]})'
                if evaluation
                else ' (evaluation not measured: not counted)'
            )
            + '; jobs take the GPUs as they free up.',
            '',
        ]
        plan_rows = [
            [
                str(p['jobs_per_gpu']),
                *(f'{p["job_hours"][k]:.2f}' for k in ('compilation', 'update', 'evaluation')),
                f'{p["wall_clock_hours"]:.1f}',
                p['bottleneck'],
            ]
            for p in result['sweep_plan']
        ]
        headers = ['jobs/GPU', 'compile h/job', 'update h/job', 'evaluation h/job']
        lines.append(table([*headers, 'wall-clock h', 'largest part'], plan_rows))
    if result['skipped']:
        lines += ['## Skipped', '', *(f'- {s}' for s in result['skipped']), '']
    return '\n'.join(lines)


def describe_device(device: dict | None) -> str:
    """``1 x NVIDIA H200 (gpu)``."""
    if not device:
        return 'device unknown (no rate was measured)'
    return f'{device["count"]} x {device["kind"]} ({device["platform"]})'


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='reduced sizes, runs on a CPU')
    parser.add_argument('--out', default='.', help='folder of device_check.json and .md')
    parser.add_argument(
        '--budget_s', type=float, help='time budget in seconds (default 450; --quick: 3600)'
    )
    parser.add_argument('--hidden', type=int, nargs='+', help='hidden widths (default: paper)')
    parser.add_argument('--batch', type=int, help='batch size (default: paper, 256)')
    parser.add_argument('--seeds', type=int, nargs='+', help='seeds vmapped (default: 1 8 32)')
    parser.add_argument(
        '--jobs_per_gpu', type=int, nargs='+', help='jobs side by side (default: 2 4)'
    )
    parser.add_argument('--updates', type=int, help='updates per timed block')
    parser.add_argument('--repeats', type=int, default=3, help='timed blocks per row (median)')
    parser.add_argument('--shared_s', type=float, help='seconds jobs sharing a GPU are timed')
    parser.add_argument('--min_phase_s', type=float, default=20.0, help=argparse.SUPPRESS)
    parser.add_argument('--worker', nargs=2, metavar=('KIND', 'SPEC'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_s is None:
        # The full check must fit 8 minutes on a GPU; the reduced one only has to finish.
        args.budget_s = 3600.0 if args.quick else 450.0
    if args.updates is None:
        args.updates = 5 if args.quick else 100
    if args.shared_s is None:
        args.shared_s = 2.0 if args.quick else 5.0
    return args


def main(argv=None) -> None:
    """Measure, then write the JSON and the Markdown table; print where they are."""
    args = parse_args(argv)
    if args.worker:
        worker_main(*args.worker)
        return
    result = DeviceCheck(args).run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'device_check.json').write_text(json.dumps(result, indent=2))
    report = markdown(result)
    (out / 'device_check.md').write_text(report)
    print(report)
    print(f'wrote {out / "device_check.json"} and {out / "device_check.md"}')


if __name__ == '__main__':
    main()
