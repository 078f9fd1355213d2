"""Update speed of every agent file: ms/update, analytic GFLOP/update and fraction of matmul peak.

Every file in ``agents/`` gets a host and a fused row (DROL one per K), timed in one run, and a
second table gives each agent's fused-over-host speed ratio from those same repetitions.

Modes (one row each):
  host   one jit call per update with a batch gathered on the host (FQL's loop,
         ``tests/references.py: host_loop_updates``);
  fused  blocks of updates fused in one compiled loop on device-resident data
         (``drol_jax.updates.make_train_block``, one stacked seed);
  naive  DROL with the reference full-K actor loss that differentiates through all N*K
         clipped candidates (winner picked from that tensor, Q of the winner only), fused blocks
         (``tests/references.py: drol_actor_loss``);
  naive-allq  as naive, but the critic scores all N*K candidates and the winner's Q is taken
         from that (the formulation of the official implementation, the ~63 GFLOP naive
         form), fused blocks. This is the issue's mode (c) and a default row.

FLOP counting (matmuls only; biases, activations, LayerNorm, Adam are ignored): a dense layer
costs 2*in*out FLOP per sample forward; a backward pass costs 2x its forward (gradients of
weights and of inputs); a backward pass that only needs input gradients (critic under the
actor's Q term, whose parameters are frozen there) costs 1x forward. Per-sample forward cost of
an MLP = 2 * sum(in*out) over its layers; the critic counts both ensemble members. DROL and FQL
also log the official ``mse`` metric, one more actor forward pass on a fresh sample. Each loss
counts what it computes, even where XLA may share a forward pass between two losses (IQL's
``V(s)`` in its value and actor losses). ReBRAC's count is the average over ``actor_freq``
updates: full updates train the actor, the others only evaluate it for the logged metrics.

    python bench/update_speed.py                 # the full table (paper sizes)
    python bench/update_speed.py --quick         # smoke run with tiny networks
    python bench/update_speed.py --agents iql sac  # some agent files only
    python bench/update_speed.py --clock cpu     # CPU time, for a machine shared with others
    python bench/update_speed.py --seeds 1 8 32  # seeds x updates/s with vmapped blocks
    python bench/update_speed.py --parts --ks 16 # where DROL's update spends its time
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

# The repository root: the agent files and the tests' reference implementations.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from drol_jax.agent_file import load_agent_file  # noqa: E402
from drol_jax.analysis.runtime import machine_description  # noqa: E402
from drol_jax.data import random_transitions, to_device  # noqa: E402
from drol_jax.updates import make_train_block, stack_agents  # noqa: E402
from tests import references  # noqa: E402

OBS_DIM, ACTION_DIM = 28, 5
DATASET_SIZE = 10_000

# Every agent file, by agent name: DROL first, then the others in name order (the table's rows).
_AGENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'agents')
AGENT_FILES = {
    file.default_config()['agent_name']: file
    for file in sorted(
        (load_agent_file(path) for path in glob.glob(os.path.join(_AGENTS_DIR, '[!_]*.py'))),
        key=lambda f: (
            f.default_config()['agent_name'] != 'drol',
            f.default_config()['agent_name'],
        ),
    )
}
drol = AGENT_FILES['drol'].module


# ---------------------------------------------------------------------------------------------
# The naive (reference) DROL actor losses.


class NaiveDROLAgent(drol.DROLAgent):
    """DROL whose actor loss differentiates through all N*K candidates (paper, Sec. 4; naive form).

    Same latents (same key use) as ``DROLAgent.actor_loss``, so loss and gradients agree with
    the winner-recompute formulation to float32 rounding; only the cost differs. The critic
    scores the N winners.
    """

    def actor_loss(self, batch, grad_params, rng):
        """The reference naive actor loss, Q of the winners only."""
        return references.drol_actor_loss(
            self, batch, grad_params, rng, critic_on_all_candidates=False
        )


class NaiveAllQDROLAgent(drol.DROLAgent):
    """Naive DROL whose critic scores all N*K candidates before the winner's Q is picked."""

    def actor_loss(self, batch, grad_params, rng):
        """The reference naive actor loss in the official formulation (Q of all candidates)."""
        return references.drol_actor_loss(
            self, batch, grad_params, rng, critic_on_all_candidates=True
        )


# ---------------------------------------------------------------------------------------------
# Analytic FLOP counts.


def mlp_forward_flops(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> int:
    """Matmul FLOP of one sample through an MLP: 2 * in * out per layer."""
    widths = (in_dim, *hidden, out_dim)
    return 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))


def update_flops(agent, mode: str, num_candidates: int, hidden, batch: int) -> float:
    """Analytic matmul FLOP of one update of ``agent``'s kind (see the module docstring)."""
    name = agent.config['agent_name']
    actor = mlp_forward_flops(OBS_DIM + ACTION_DIM, hidden, ACTION_DIM)  # One-step policy.
    critic = 2 * mlp_forward_flops(OBS_DIM + ACTION_DIM, hidden, 1)  # Two ensemble members.
    value = mlp_forward_flops(OBS_DIM, hidden, 1)
    flow = mlp_forward_flops(OBS_DIM + ACTION_DIM + 1, hidden, ACTION_DIM)
    gaussian = mlp_forward_flops(OBS_DIM, hidden, ACTION_DIM)  # Trunk and mean head.
    if name == 'sac':
        gaussian += 2 * hidden[-1] * ACTION_DIM  # The log-std head.
    # DROL and FQL: next action (actor fwd), target critic fwd, critic fwd + bwd, and the mse
    # metric's fresh sample (actor fwd).
    shared = actor + critic + 3 * critic + actor
    if name == 'fql':
        # Flow BC fwd+bwd, 10 Euler steps of the teacher (fwd), one-step fwd+bwd, Q fwd+input bwd.
        per_sample = shared + 3 * flow + 10 * flow + 3 * actor + 2 * critic
    elif name in ('iql', 'ifql'):
        # Value: target critic fwd, V fwd+bwd; critics: V(s') fwd, critic fwd+bwd.
        implicit = critic + 3 * value + value + 3 * critic
        if name == 'ifql':
            per_sample = implicit + 3 * flow  # Flow-matching BC fwd+bwd.
        else:  # AWR: V(s) and Q(s, a) fwd for the weights, the Gaussian's fwd+bwd.
            per_sample = implicit + value + critic + 3 * gaussian
    elif name == 'rebrac':
        # Target actor fwd at s', target critic fwd, critic fwd+bwd; then the actor: fwd+bwd and
        # Q fwd+input bwd on full updates, fwd and Q fwd (metrics) on the others.
        full = 1 / agent.config['actor_freq']
        actor_part = full * (3 * gaussian + 2 * critic) + (1 - full) * (gaussian + critic)
        per_sample = gaussian + 4 * critic + actor_part
    elif name == 'sac':
        # Next sample fwd, target critic fwd, critic fwd+bwd; the actor's sample fwd+bwd and Q
        # fwd+input bwd (alpha's loss is scalar).
        per_sample = gaussian + 4 * critic + 3 * gaussian + 2 * critic
    elif mode == 'naive':
        per_sample = shared + 3 * num_candidates * actor + 2 * critic
    elif mode == 'naive-allq':
        per_sample = shared + 3 * num_candidates * actor + 2 * num_candidates * critic
    else:  # Routing forward over K candidates, winner actor fwd+bwd, winner Q fwd+input bwd.
        per_sample = shared + num_candidates * actor + 3 * actor + 2 * critic
    return per_sample * batch


# ---------------------------------------------------------------------------------------------
# Timing.


MODES = ('host', 'fused', 'naive', 'naive-allq')
AGENT_CLASSES = {
    **{name: file.agent_class for name, file in AGENT_FILES.items()},
    'naive': NaiveDROLAgent,
    'naive-allq': NaiveAllQDROLAgent,
}


def base_agent(kind: str) -> str:
    """The agent file a row's kind runs: DROL for its naive losses, else the kind itself."""
    return 'drol' if kind in ('naive', 'naive-allq') else kind


def display_name(kind: str) -> str:
    """The agent's name in tables: its class name without 'Agent' (DROL, FQL, ReBRAC, ...)."""
    return AGENT_FILES[base_agent(kind)].agent_class.__name__.removesuffix('Agent')


def make_agent(kind: str, num_candidates: int, hidden, batch: int, seed: int = 0):
    """An agent of ``kind`` (an agent name, 'naive' or 'naive-allq') at the given sizes."""
    config = AGENT_FILES[base_agent(kind)].default_config()
    config.actor_hidden_dims = config.value_hidden_dims = tuple(hidden)
    config.batch_size = batch
    if base_agent(kind) == 'drol':
        config.num_candidates = num_candidates
    examples = random_transitions(1, OBS_DIM, ACTION_DIM)
    # Jitted: op-by-op initialisation of the four networks takes seconds on a busy CPU.
    create = jax.jit(
        lambda: AGENT_CLASSES[kind].create(
            seed, examples['observations'], examples['actions'], config
        )
    )
    return create()


def as_kind(agent, kind: str):
    """The same parameters and state under another loss of its agent.

    Creation is slow on a busy CPU, so DROL's naive losses reuse the DROL agent's state.
    """
    return AGENT_CLASSES[kind](rng=agent.rng, network=agent.network, config=agent.config)


def host_runner(agent, dataset, updates: int, batch: int):
    """A call that runs ``updates`` updates of the one-jit-call-per-update host loop."""
    state = {'agent': agent, 'key': jax.random.PRNGKey(1)}

    def run():
        state['agent'], state['key'], _ = references.host_loop_updates(
            state['agent'], dataset, state['key'], updates, batch
        )
        jax.block_until_ready(state['agent'])

    return run


def fused_runner(agents, data, updates: int, batch: int):
    """A call that runs one fused block of ``updates`` updates (``agents`` stacked by seed)."""
    block = make_train_block(batch)
    num_seeds = jax.tree_util.tree_leaves(agents)[0].shape[0]
    state = {
        'agents': agents,
        'keys': jnp.stack([jax.random.PRNGKey(1 + s) for s in range(num_seeds)]),
    }

    def run():
        # The block donates its inputs, so the outputs must replace them.
        state['agents'], state['keys'], info, _ = block(
            state['agents'], state['keys'], data, updates
        )
        jax.block_until_ready((state['agents'], info))

    return run


def matmul_runner(size: int):
    """A call of a jitted float32 ``size x size @ size x size`` matmul."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    return lambda: matmul(a, b).block_until_ready()


# What a repetition's seconds are: elapsed time, or the CPU time of this process (every
# thread, the host loop's Python work included), which other jobs on a shared machine inflate
# far less than they inflate elapsed time.
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def time_round_robin(runners: list, repeats: int, clock=time.perf_counter) -> list[list[float]]:
    """Seconds of ``repeats`` calls of every runner, interleaved round by round.

    On a shared CPU the load changes over minutes; interleaving gives every row the same mix
    of quiet and busy moments, so ratios between rows stay meaningful. Each runner is called
    once first (compilation, warm caches). ``clock`` is one of ``CLOCKS``.
    """
    for run in runners:
        run()
    times = [[] for _ in runners]
    for _ in range(repeats):
        for index, run in enumerate(runners):
            start = clock()
            run()
            times[index].append(clock() - start)
    return times


# ---------------------------------------------------------------------------------------------
# Tables.


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A Markdown table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print('| ' + ' | '.join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for row in rows:
        print('| ' + ' | '.join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + ' |')
    sys.stdout.flush()


def rows_to_run(args) -> list[tuple[str, str, int]]:
    """(agent kind, mode, K) triples of the table.

    DROL per K and mode, then every other agent file in its host and fused modes (K is 0 where
    the agent has none).
    """
    runs = []
    if 'drol' in args.agents:
        for k in args.ks:
            for mode in args.modes:
                runs.append(('drol' if mode in ('host', 'fused') else mode, mode, k))
    for name in args.agents:
        if name != 'drol':
            runs.extend((name, mode, 0) for mode in args.modes if mode in ('host', 'fused'))
    return runs


def peak_size(args) -> int:
    """Matmul size of the peak measurement (small in quick mode)."""
    return 256 if args.quick else 2048


def update_table(args, hidden) -> None:
    """Time every (agent, mode, K) row, interleaved with the matmul peak, and print the table.

    A second table gives each agent's fused-over-host speed ratio from the same repetitions.
    """
    dataset = random_transitions(DATASET_SIZE, OBS_DIM, ACTION_DIM)
    data = to_device(dataset)
    rows_spec, runners, created = rows_to_run(args), [matmul_runner(peak_size(args))], {}
    for kind, mode, k in rows_spec:
        base = base_agent(kind)
        if (base, k) not in created:
            created[base, k] = make_agent(base, k, hidden, args.batch)
        agent = as_kind(created[base, k], kind)
        if mode == 'host':
            runners.append(host_runner(agent, dataset, args.updates, args.batch))
        else:
            runners.append(fused_runner(stack_agents([agent]), data, args.updates, args.batch))
    times = time_round_robin(runners, args.repeats, CLOCKS[args.clock])
    peak_flop = 2 * peak_size(args) ** 3
    peak = peak_flop / min(times[0]) / 1e9
    peak_median = peak_flop / statistics.median(times[0]) / 1e9
    print(
        f'float32 matmul peak ({peak_size(args)}^3, jitted): best {peak:.0f} GFLOP/s, '
        f'median {peak_median:.0f} GFLOP/s (interleaved with the rows)'
    )
    headers = ['agent', 'mode', 'K', 'network', 'ms/update', 'best ms', 'updates/s']
    headers += ['GFLOP/update', 'GFLOP/s', '% of peak']
    rows = []
    for (kind, mode, k), row_times in zip(rows_spec, times[1:], strict=True):
        seconds = statistics.median(row_times) / args.updates
        best = min(row_times) / args.updates
        agent = created[base_agent(kind), k]
        gflop = update_flops(agent, mode, k, hidden, args.batch) / 1e9
        rows.append(
            [
                display_name(kind),
                mode,
                str(k) if k else '-',
                f'{len(hidden)}x{hidden[0]}, N={args.batch}',
                f'{seconds * 1e3:.1f}',
                f'{best * 1e3:.1f}',
                f'{1 / seconds:.1f}',
                f'{gflop:.2f}',
                f'{gflop / seconds:.0f}',
                f'{100 * gflop / seconds / peak_median:.0f}%',
            ]
        )
    print_table(headers, rows)
    ratio_table(rows_spec, times[1:])


def ratio_table(rows_spec: list[tuple[str, str, int]], times: list[list[float]]) -> None:
    """Per agent (and K), fused updates/s over host-loop updates/s, from the same run.

    Each round of the round robin timed both rows within seconds of each other, so the ratio
    of a round compares them under the same load; the table gives the median and the lowest
    of those per-round ratios (above 1: the fused blocks are faster).
    """
    by_row = dict(zip(rows_spec, times, strict=True))
    rows = []
    for kind, mode, k in rows_spec:
        if mode != 'fused' or (kind, 'host', k) not in by_row:
            continue
        host_times, fused_times = by_row[kind, 'host', k], by_row[kind, mode, k]
        ratios = [h / f for h, f in zip(host_times, fused_times, strict=True)]
        median = statistics.median(ratios)
        rows.append(
            [
                display_name(kind),
                str(k) if k else '-',
                f'{median:.2f}x',
                f'{min(ratios):.2f}x',
                'yes' if median >= 1 else 'no',
            ]
        )
    if rows:
        headers = ['agent', 'K', 'fused / host updates/s (median)', 'lowest round', 'fused >= host']
        print()
        print_table(headers, rows)


def seeds_table(args, hidden) -> None:
    """Seeds x updates/s of vmapped multi-seed fused blocks, for each seed count."""
    data = to_device(random_transitions(DATASET_SIZE, OBS_DIM, ACTION_DIM))
    specs, runners = [], []
    for kind in args.agents:
        k = args.ks[0] if kind == 'drol' else 0
        for num_seeds in args.seeds:
            agents = stack_agents(
                [make_agent(kind, k, hidden, args.batch, seed=s) for s in range(num_seeds)]
            )
            specs.append((kind, k, num_seeds))
            runners.append(fused_runner(agents, data, args.updates, args.batch))
    rows = []
    for (kind, k, num_seeds), row_times in zip(
        specs, time_round_robin(runners, args.repeats, CLOCKS[args.clock]), strict=True
    ):
        seconds = statistics.median(row_times) / args.updates
        rows.append(
            [
                display_name(kind),
                str(k) if k else '-',
                str(num_seeds),
                f'{seconds * 1e3:.1f}',
                f'{num_seeds / seconds:.1f}',
            ]
        )
    print_table(['agent', 'K', 'seeds', 'ms/block-update', 'seed-updates/s'], rows)


def xla_gflop(compiled_fn, *args) -> float:
    """FLOP count XLA reports for the compiled program (checks dead-code elimination)."""
    cost = compiled_fn.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost.get('flops', float('nan')) / 1e9


def drol_parts(agent, batch, num_candidates: int) -> list[tuple[str, Callable, tuple]]:
    """(name, jitted function, arguments) of the parts of one DROL update."""
    params, actor = agent.network.params, agent.network.select('actor_onestep_flow')
    observations, actions = batch['observations'], batch['actions']
    num_states = actions.shape[0]
    latents = drol.sample_ball_prior(
        jax.random.PRNGKey(3), (num_states, num_candidates), ACTION_DIM
    )
    rng = jax.random.PRNGKey(5)

    def routing(p, z):
        candidates = jax.vmap(lambda zk: actor(observations, zk, params=p), 1, 1)(z)
        return jnp.clip(candidates, -1, 1)

    def routing_matmuls(p, z):
        layers = p['modules_actor_onestep_flow']['mlp']
        tiled = jnp.broadcast_to(observations[:, None], (*z.shape[:2], OBS_DIM))
        x = jnp.concatenate([tiled, z], axis=-1)
        for i in range(len(layers)):
            x = x @ layers[f'Dense_{i}']['kernel']
        return x

    def winner(p, z):
        return jnp.mean((jnp.clip(actor(observations, z, params=p), -1, 1) - actions) ** 2)

    return [
        ('routing fwd, K candidates', jax.jit(routing), (params, latents)),
        ('routing fwd, matmuls only', jax.jit(routing_matmuls), (params, latents)),
        ('winner actor fwd+bwd', jax.jit(jax.grad(winner)), (params, latents[:, 0])),
        (
            'critic loss fwd+bwd',
            jax.jit(jax.grad(lambda p: agent.critic_loss(batch, p, rng)[0])),
            (params,),
        ),
        (
            'actor loss fwd+bwd',
            jax.jit(jax.grad(lambda p: agent.actor_loss(batch, p, rng)[0])),
            (params,),
        ),
        ('full update (jit)', jax.jit(lambda a: a.update(batch)), (agent,)),
    ]


def parts_table(args, hidden) -> None:
    """Sub-parts of one DROL update (jitted separately), to see where the time goes."""
    data = to_device(random_transitions(DATASET_SIZE, OBS_DIM, ACTION_DIM))
    batch = jax.tree_util.tree_map(lambda x: x[: args.batch], data)
    rows = []
    for k in args.ks:
        parts = drol_parts(make_agent('drol', k, hidden, args.batch), batch, k)
        runners = [
            functools.partial(lambda f, a: jax.block_until_ready(f(*a)), f, a) for _, f, a in parts
        ]
        times = time_round_robin(runners, args.repeats, CLOCKS[args.clock])
        for (name, f, a), part_times in zip(parts, times, strict=True):
            seconds = statistics.median(part_times)
            gflop = xla_gflop(f, *a)
            rows.append(
                [str(k), name, f'{seconds * 1e3:.1f}', f'{gflop:.2f}', f'{gflop / seconds:.0f}']
            )
    print_table(['K', 'part', 'ms', 'XLA GFLOP', 'GFLOP/s'], rows)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything to a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny networks, few updates')
    parser.add_argument('--ks', type=int, nargs='+', default=[1, 4, 16, 64])
    parser.add_argument(
        '--modes', nargs='+', default=['host', 'fused', 'naive-allq'], choices=MODES
    )
    parser.add_argument(
        '--agents',
        nargs='+',
        default=list(AGENT_FILES),
        choices=list(AGENT_FILES),
        help='agent files to time (default: every file in agents/)',
    )
    parser.add_argument('--hidden', type=int, nargs='+', default=[512] * 4)
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--updates', type=int, default=10, help='updates per timed repetition')
    parser.add_argument('--repeats', type=int, default=5, help='timed repetitions (median)')
    parser.add_argument(
        '--clock',
        choices=list(CLOCKS),
        default='wall',
        help="wall: elapsed time; cpu: this process's CPU time (for a shared machine)",
    )
    parser.add_argument('--seeds', type=int, nargs='+', help='time vmapped multi-seed blocks')
    parser.add_argument('--parts', action='store_true', help="time parts of DROL's update")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.batch, args.updates, args.repeats = [32], 32, 3, 2
        args.ks = [4]
    return args


def main(argv=None) -> None:
    """Print the machine, the matmul peak and the requested table."""
    args = parse_args(argv)
    hidden = tuple(args.hidden)
    print(f'Machine: {machine_description()}')
    unit = 'call per part' if args.parts else f'block of {args.updates} updates per row'
    clock = 'elapsed time' if args.clock == 'wall' else 'process CPU time (all threads)'
    print(
        f'Timing ({clock}): median of {args.repeats} interleaved repetitions of one {unit}, '
        'after warmup (best ms: the fastest repetition).'
    )
    if args.parts:
        parts_table(args, hidden)
    elif args.seeds:
        seeds_table(args, hidden)
    else:
        update_table(args, hidden)


if __name__ == '__main__':
    main()
