"""Training time per update against K, and single-pass inference time, DROL beside FQL.

Training is timed the way runs train: fused blocks of updates on device-resident data
(``make_train_block``, one stacked seed), median over repetitions after a compile/warm-up block.
Inference is one ``sample_actions`` call on one state (what an environment step costs), median
over many calls. The data are random transitions with the shapes of the paper's reference
measurement (observation 28, action 5); speed does not depend on the values.

Training times can instead be read from the table ``bench/update_speed.py`` prints (Markdown,
or the same columns as CSV/JSON) with ``--from_bench``; inference is then still measured here.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from drol_jax.analysis import common
from drol_jax.data import random_transitions
from drol_jax.errors import UserError

OBS_DIM, ACTION_DIM = 28, 5
DATASET_SIZE = 10_000
SIZES = {'small': (128, 128), 'paper': (512, 512, 512, 512), 'tiny': (16, 16)}


@dataclasses.dataclass
class RuntimeSettings:
    """What to time and how often."""

    drol_path: str = 'agents/drol.py'
    fql_path: str = 'agents/fql.py'
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    size: str = 'small'
    batch_size: int = 256
    updates: int = 20  # Updates per timed block.
    repeats: int = 5  # Timed blocks; the median is reported.
    inference_calls: int = 200
    from_bench: str | None = None


def median_ms(call, repeats: int) -> float:
    """Median wall time of ``call`` in milliseconds over ``repeats`` calls (after one warm-up)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_agent(
    agent_path: str, overrides: dict, settings: RuntimeSettings, dataset, time_training: bool
) -> dict:
    """Milliseconds per fused update (NaN unless ``time_training``) and per inference call."""
    loaded = common.load_agent(agent_path)
    config = loaded.config(**overrides)
    trainer = common.FusedTrainer(loaded.agent_class, config, dataset, [0])

    def train_block():
        trainer.train(settings.updates)
        jax.block_until_ready(trainer.agents)

    update_ms = float('nan')
    if time_training:
        update_ms = median_ms(train_block, settings.repeats) / settings.updates
    agent = trainer.agent()
    observation = jnp.asarray(dataset['observations'][:1])
    key = jax.random.PRNGKey(0)
    inference_ms = median_ms(
        lambda: agent.sample_actions(observation, seed=key).block_until_ready(),
        settings.inference_calls,
    )
    return {'agent': config['agent_name'], 'update_ms': update_ms, 'inference_ms': inference_ms}


def read_bench(path: str) -> list[dict]:
    """Training rows (agent, K, update_ms) from ``bench/update_speed.py`` output.

    Accepts its Markdown table (``| agent | mode | K | ... | ms/update | ...``), or CSV/JSON
    with those columns. Fused-mode rows are used when present (that is how runs train),
    otherwise host-mode rows; K is '-' or empty for FQL.
    """
    if not os.path.isfile(path):
        raise UserError(f'--from_bench file {path!r} does not exist.')
    with open(path) as f:
        text = f.read()
    if path.endswith('.json'):
        payload = json.loads(text)
        rows = payload['rows'] if isinstance(payload, dict) else payload
    elif path.endswith('.csv'):
        rows = list(csv.DictReader(text.splitlines()))
    else:
        table = [
            [cell.strip() for cell in line.strip().strip('|').split('|')]
            for line in text.splitlines()
            if line.strip().startswith('|') and not set(line.strip()) <= set('|-: ')
        ]
        if not table:
            raise UserError(f'--from_bench file {path!r} holds no Markdown table.')
        rows = [dict(zip(table[0], row, strict=False)) for row in table[1:]]
    modes = {str(r.get('mode', 'fused')) for r in rows}
    mode = 'fused' if 'fused' in modes else sorted(modes)[0]
    parsed = []
    for row in rows:
        if str(row.get('mode', 'fused')) != mode or 'ms/update' not in row:
            continue
        k = str(row.get('K', '')).strip()
        parsed.append(
            {
                'agent': str(row['agent']).lower(),
                'K': int(k) if k not in ('', '-', 'None') else None,
                'update_ms': float(row['ms/update']),
                'mode': mode,
            }
        )
    if not parsed:
        raise UserError(f'--from_bench file {path!r} has no rows with agent, K and ms/update.')
    return parsed


def machine_description() -> str:
    """CPU model, core count and jax backend, for the figure's title."""
    model = platform.processor() or 'unknown CPU'
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        model = names[0] if names else model
    device = jax.devices()[0]
    return f'{model}, {os.cpu_count()} cores, jax {jax.__version__} ({device.platform})'


def run(settings: RuntimeSettings) -> dict:
    """Time DROL at every K and FQL once (or read training times from a bench file)."""
    if settings.size not in SIZES:
        raise UserError(f'--size must be one of {sorted(SIZES)}, got {settings.size!r}.')
    hidden = SIZES[settings.size]
    dataset = random_transitions(DATASET_SIZE, OBS_DIM, ACTION_DIM)
    shared = {
        'actor_hidden_dims': hidden,
        'value_hidden_dims': hidden,
        'batch_size': settings.batch_size,
    }
    # Other processes on the machine slow every timing down; record how busy it was.
    load_before = os.getloadavg()[0]
    measure = settings.from_bench is None
    # A bench file (read first, so a bad file fails before any timing) replaces training times.
    bench = [] if measure else read_bench(settings.from_bench)
    bench_drol = {r['K']: r['update_ms'] for r in bench if r['agent'] == 'drol'}
    bench_fql = [r['update_ms'] for r in bench if r['agent'] == 'fql']
    drol_rows = []
    for k in settings.ks:
        overrides = {**shared, 'num_candidates': k}
        row = {**time_agent(settings.drol_path, overrides, settings, dataset, measure), 'K': k}
        if not measure:
            row['update_ms'] = bench_drol.get(k, float('nan'))
        drol_rows.append(row)
        print(
            f'DROL K={k:>3}: {row["update_ms"]:.2f} ms/update, '
            f'{row["inference_ms"]:.3f} ms/inference',
            flush=True,
        )
    fql = time_agent(settings.fql_path, shared, settings, dataset, measure)
    if not measure:
        fql['update_ms'] = bench_fql[0] if bench_fql else float('nan')
    print(f'FQL: {fql["update_ms"]:.2f} ms/update, {fql["inference_ms"]:.3f} ms/inference')
    source = 'measured here'
    if not measure:
        source = f'from {os.path.basename(settings.from_bench)} ({bench[0]["mode"]} mode)'
    return {
        'settings': dataclasses.asdict(settings),
        'hidden': hidden,
        'obs_dim': OBS_DIM,
        'action_dim': ACTION_DIM,
        'machine': machine_description(),
        'training_source': source,
        'load_average': [load_before, os.getloadavg()[0]],
        'drol': drol_rows,
        'fql': fql,
    }


def draw(result: dict, path: str) -> None:
    """Two panels against K: ms per training update, ms per inference call."""
    plt = common.pyplot()
    settings = result['settings']
    ks = np.array([r['K'] for r in result['drol']])
    fig, (ax_train, ax_infer) = plt.subplots(1, 2, figsize=(11, 4.4))
    panels = (
        (
            ax_train,
            'update_ms',
            'ms per training update',
            f'Training ({result["training_source"]})',
        ),
        (
            ax_infer,
            'inference_ms',
            f'ms per sample_actions call (1 state, median of {settings["inference_calls"]})',
            'Inference (one pass)',
        ),
    )
    for ax, key, ylabel, title in panels:
        ax.plot(ks, [r[key] for r in result['drol']], marker='o', label='DROL (K candidates)')
        ax.axhline(result['fql'][key], color='C3', ls='--', label='FQL (no K)')
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
    common.k_axes(
        (ax_train, ax_infer), ks, 'K (DROL candidates per state during training)', legend_size=9
    )
    hidden = result['hidden']
    before, after = result['load_average']
    fig.suptitle(
        f'Wall time, networks {len(hidden)}x{hidden[0]}, batch {settings["batch_size"]}, '
        f'obs {result["obs_dim"]}, action {result["action_dim"]} (median of '
        f'{settings["repeats"]} blocks of {settings["updates"]} updates)\n{result["machine"]}; '
        f'1-min load average {before:.1f} at start, {after:.1f} at end',
        fontsize=10,
    )
    common.save_figure(fig, path, dpi=90)


def write(result: dict, out_dir: str) -> tuple[str, str]:
    """Write ``runtime.png`` and ``runtime.json`` into ``out_dir``."""
    return common.write_figure(result, out_dir, 'runtime', draw)
