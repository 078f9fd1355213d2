"""Command line: ``python -m drol_jax.analysis <figure> --out_dir DIR [options]``.

Figures:
  voronoi    nearest-candidate regions of one toy state through training, with handoffs
  k-scaling  routed BC loss and candidate spread against K, several seeds
  runtime    ms per training update and per inference call against K, DROL beside FQL
  variants   DROL and its variants side by side: toy mechanism metrics and an OGBench task
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from drol_jax.analysis import k_scaling, runtime, variants, voronoi
from drol_jax.cli import ArgumentParser, reports_user_errors


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per figure."""
    parser = ArgumentParser(
        prog='python -m drol_jax.analysis',
        description='Figures that show what DROL does; each writes a PNG and its numbers.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 2)[2],
    )
    figures = parser.add_subparsers(dest='figure', required=True, metavar='figure')

    vor = figures.add_parser('voronoi', help='routing regions of one state through training')
    vor_defaults = voronoi.VoronoiSettings()
    vor.add_argument('--out_dir', required=True, help='folder for voronoi.png and voronoi.json')
    _add_agent_option(vor, 'agent_path', vor_defaults.agent_path, 'DROL agent file')
    vor.add_argument(
        '--K',
        dest='num_candidates',
        metavar='K',
        type=int,
        default=vor_defaults.num_candidates,
        help='candidates',
    )
    vor.add_argument('--steps', type=int, default=vor_defaults.steps, help='updates in all')
    vor.add_argument(
        '--snapshots',
        type=int,
        default=vor_defaults.snapshots,
        help='snapshots evenly spaced from update 0 to --steps',
    )
    vor.add_argument(
        '--warmup_steps',
        type=int,
        default=vor_defaults.warmup_steps,
        help='BC-only (q_coef=0) updates before the first snapshot',
    )
    vor.add_argument('--q_coef', type=float, help="actor's Q weight (default: agent file's)")
    vor.add_argument('--bc_coef', type=float, help="actor's BC weight (default: agent file's)")
    vor.add_argument(
        '--state',
        type=float,
        nargs=2,
        default=vor_defaults.state,
        help='the fixed state (2 numbers in [-1, 1])',
    )
    vor.add_argument('--grid_size', type=int, default=vor_defaults.grid_size)
    _add_training_options(vor, vor_defaults)

    ks = figures.add_parser('k-scaling', help='routed BC loss and spread against K')
    ks_defaults = k_scaling.KScalingSettings()
    ks.add_argument('--out_dir', required=True, help='folder for k_scaling.png and .json')
    _add_agent_option(ks, 'agent_path', ks_defaults.agent_path, 'DROL agent file')
    ks.add_argument('--ks', type=int, nargs='+', default=list(ks_defaults.ks), help='K values')
    ks.add_argument('--steps', type=int, default=ks_defaults.steps, help='updates per K')
    ks.add_argument('--seeds', type=int, default=ks_defaults.seeds, help='seeds per K')
    ks.add_argument('--q_coef', type=float, default=ks_defaults.q_coef, help="actor's Q weight")
    ks.add_argument(
        '--eval_states',
        type=int,
        default=ks_defaults.eval_states,
        help='held-out (state, action) pairs',
    )
    ks.add_argument(
        '--eval_draws',
        type=int,
        default=ks_defaults.eval_draws,
        help='latent draws averaged for the routed BC loss',
    )
    ks.add_argument(
        '--spread_latents',
        type=int,
        default=ks_defaults.spread_latents,
        help='latents per state for the spread (same for every K)',
    )
    _add_training_options(ks, ks_defaults)

    rt = figures.add_parser('runtime', help='training and inference time against K')
    rt_defaults = runtime.RuntimeSettings()
    rt.add_argument('--out_dir', required=True, help='folder for runtime.png and runtime.json')
    _add_agent_option(rt, 'drol_path', rt_defaults.drol_path, 'DROL agent file')
    rt.add_argument(
        '--fql_agent',
        dest='fql_path',
        metavar='FQL_AGENT',
        default=rt_defaults.fql_path,
        help='FQL agent file',
    )
    rt.add_argument('--ks', type=int, nargs='+', default=list(rt_defaults.ks), help='K values')
    rt.add_argument(
        '--size',
        choices=sorted(runtime.SIZES),
        default=rt_defaults.size,
        help='network sizes: ' + ', '.join(f'{k} {v}' for k, v in runtime.SIZES.items()),
    )
    rt.add_argument('--batch_size', type=int, default=rt_defaults.batch_size)
    rt.add_argument(
        '--updates', type=int, default=rt_defaults.updates, help='updates per timed block'
    )
    rt.add_argument('--repeats', type=int, default=rt_defaults.repeats, help='timed blocks')
    rt.add_argument('--inference_calls', type=int, default=rt_defaults.inference_calls)
    rt.add_argument('--from_bench', help='read training times from bench/update_speed.py output')

    va = figures.add_parser('variants', help='DROL and its variants side by side')
    va_defaults = variants.VariantsSettings()
    va.add_argument('--out_dir', required=True, help='folder for variants.png/.json/.md, runs/')
    va.add_argument(
        '--agents',
        nargs='+',
        default=[],
        metavar='AGENT',
        help='agent files, each PATH[:name=value,...] (default: agents/drol.py, agents/drol_*.py)',
    )
    va.add_argument('--seeds', type=int, default=va_defaults.seeds, help='toy seeds')
    va.add_argument('--steps', type=int, default=va_defaults.steps, help='toy updates')
    va.add_argument(
        '--curve_points',
        type=int,
        default=va_defaults.curve_points,
        help='points of the training curves',
    )
    va.add_argument('--eval_states', type=int, default=va_defaults.eval_states)
    va.add_argument(
        '--eval_draws', type=int, default=va_defaults.eval_draws, help='actions per state'
    )
    _add_training_options(va, va_defaults)
    va.add_argument(
        '--ogbench_dataset',
        help='.npz made by python -m drol_jax.envs.datagen (without it: no OGBench runs)',
    )
    va.add_argument('--ogbench_env', default=va_defaults.ogbench_env)
    va.add_argument('--ogbench_steps', type=int, default=va_defaults.ogbench_steps)
    va.add_argument('--ogbench_seeds', type=int, default=va_defaults.ogbench_seeds)
    va.add_argument(
        '--ogbench_hidden', type=int, nargs='+', default=list(va_defaults.ogbench_hidden)
    )
    va.add_argument('--ogbench_batch_size', type=int, default=va_defaults.ogbench_batch_size)
    va.add_argument('--ogbench_eval_episodes', type=int, default=va_defaults.ogbench_eval_episodes)
    return parser


def _add_agent_option(parser: argparse.ArgumentParser, field: str, default: str, text: str) -> None:
    """``--agent``, stored under the settings field ``field``."""
    parser.add_argument('--agent', dest=field, metavar='AGENT', default=default, help=text)


def _add_training_options(parser: argparse.ArgumentParser, defaults) -> None:
    """Seed and network options shared by the figures that train."""
    parser.add_argument('--seed', type=int, default=defaults.seed, help='first seed')
    parser.add_argument(
        '--hidden',
        type=int,
        nargs='+',
        default=list(defaults.hidden),
        help='hidden widths of actor and critic',
    )
    parser.add_argument('--batch_size', type=int, default=defaults.batch_size)


def settings_from(args: argparse.Namespace, settings_class: type):
    """The figure's settings from the flags stored under its field names (lists as tuples).

    Fields without a flag keep their defaults.
    """
    values = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(settings_class)
        if hasattr(args, field.name)
    }
    return settings_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def run_figure(args: argparse.Namespace) -> tuple[str, str]:
    """Compute, print and write the chosen figure; returns (png path, numbers path)."""
    if args.figure == 'voronoi':
        result = voronoi.run(settings_from(args, voronoi.VoronoiSettings))
        print('\n'.join(voronoi.summary_lines(result)))
        return voronoi.write(result, args.out_dir)
    if args.figure == 'k-scaling':
        result = k_scaling.run(settings_from(args, k_scaling.KScalingSettings))
        return k_scaling.write(result, args.out_dir)
    if args.figure == 'variants':
        result = variants.run(settings_from(args, variants.VariantsSettings), args.out_dir)
        print('\n'.join(variants.table_lines(result)))
        return variants.write(result, args.out_dir)
    result = runtime.run(settings_from(args, runtime.RuntimeSettings))
    return runtime.write(result, args.out_dir)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print one line and return 2."""
    args = build_parser().parse_args(argv)
    png, numbers = run_figure(args)
    print(f'wrote {png} and {numbers}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
