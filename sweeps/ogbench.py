"""The paper's OGBench experiments: ``python -m drol_jax.sweep sweeps/ogbench.py:VARIANT``.

Variants:

- ``drol16``: DROL(16), the published per-family settings with K=16 (``--preset=paper``);
- ``drol_star``: DROL*, the per-family K (``--preset=paper-tuned``);
- ``fql``: FQL with its published per-family alpha (``--preset=paper``);
- ``iql``, ``rebrac``, ``ifql``: the FQL panel's IQL, ReBRAC and IFQL (``--preset=paper``). Their
  agent files carry the authors' published values only for humanoidmaze-medium-navigate (the FQL
  README's example commands); every other family runs with the agent file's defaults, and its
  ``Settings:`` line says so. The FQL paper's appendix tables hold the rest;
- ``k_sweep``: DROL with K in {1, 2, 4, 8, 16, 32, 64} on each family's representative task (its
  default task), the other settings as DROL(16).

The 10 state-based families, 5 tasks each (except ``k_sweep``), 1M updates, evaluation every
100k updates with 50 episodes, 8 seeds per task trained together in one job.
"""

# Family (dataset name without version) -> its default task, the representative in the K sweep.
FAMILIES = {
    'antmaze-large-navigate': 1,
    'antmaze-giant-navigate': 1,
    'humanoidmaze-medium-navigate': 1,
    'humanoidmaze-large-navigate': 1,
    'antsoccer-arena-navigate': 4,
    'cube-single-play': 2,
    'cube-double-play': 2,
    'scene-play': 2,
    'puzzle-3x3-play': 4,
    'puzzle-4x4-play': 4,
}
RUN_FLAGS = dict(
    offline_steps=1_000_000,
    eval_interval=100_000,
    eval_episodes=50,
    log_interval=5_000,
    save_interval=250_000,
)
# Variant -> agent file, for the agents that run on the published preset as they are.
PANEL = {
    'fql': 'agents/fql.py',
    'iql': 'agents/iql.py',
    'rebrac': 'agents/rebrac.py',
    'ifql': 'agents/ifql.py',
}


def task(family, number):
    """The OGBench single-task name of task ``number`` of ``family``."""
    return f'{family}-singletask-task{number}-v0'


def get_sweep(variant):
    """The sweep named by ``variant`` (see the module docstring)."""
    all_tasks = [task(family, n) for family in FAMILIES for n in range(1, 6)]
    common = dict(envs=all_tasks, flags=RUN_FLAGS, seed=0, num_seeds=8)
    sweeps = {
        'drol16': dict(name='ogbench_drol16', agents=['agents/drol.py'], presets=['paper']),
        'drol_star': dict(
            name='ogbench_drol_star', agents=['agents/drol.py'], presets=['paper-tuned']
        ),
        **{
            name: dict(name=f'ogbench_{name}', agents=[path], presets=['paper'])
            for name, path in PANEL.items()
        },
        'k_sweep': dict(
            name='ogbench_k_sweep',
            agents=['agents/drol.py'],
            presets=['paper'],
            envs=[task(family, n) for family, n in FAMILIES.items()],
            grid={'agent.num_candidates': [1, 2, 4, 8, 16, 32, 64]},
        ),
    }
    if variant not in sweeps:
        raise ValueError(f'unknown variant {variant!r}; choose one of {", ".join(sweeps)}')
    return {**common, **sweeps[variant]}
