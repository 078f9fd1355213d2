"""The paper's D4RL experiments: ``python -m drol_jax.sweep sweeps/d4rl.py:VARIANT``.

Variants: ``drol`` (DROL(16), ``--preset=paper``), ``drol_star`` (DROL*, the tuned K and
bc_coef, ``--preset=paper-tuned``), ``fql`` (FQL's published alpha), and the FQL panel's
``iql``, ``rebrac`` and ``ifql`` (``--preset=paper``: their agent files carry no published D4RL
value, so these run with each agent file's defaults, and each run's ``Settings:`` line says so;
the FQL paper's appendix tables hold the published ones). The 6 AntMaze and 12 Adroit tasks,
500k updates, evaluation every 100k updates with 50 episodes, 8 seeds per task.
"""

ANTMAZE = ['umaze', 'umaze-diverse', 'medium-play', 'medium-diverse', 'large-play', 'large-diverse']
ADROIT = [
    f'{domain}-{dataset}'
    for domain in ('pen', 'door', 'hammer', 'relocate')
    for dataset in ('human', 'cloned', 'expert')
]
RUN_FLAGS = dict(
    offline_steps=500_000,
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


def get_sweep(variant):
    """The sweep named by ``variant`` (see the module docstring)."""
    envs = [f'antmaze-{name}-v2' for name in ANTMAZE] + [f'{name}-v1' for name in ADROIT]
    sweeps = {
        'drol': dict(name='d4rl_drol', agents=['agents/drol.py'], presets=['paper']),
        'drol_star': dict(
            name='d4rl_drol_star', agents=['agents/drol.py'], presets=['paper-tuned']
        ),
        **{
            name: dict(name=f'd4rl_{name}', agents=[path], presets=['paper'])
            for name, path in PANEL.items()
        },
    }
    if variant not in sweeps:
        raise ValueError(f'unknown variant {variant!r}; choose one of {", ".join(sweeps)}')
    return dict(envs=envs, flags=RUN_FLAGS, seed=0, num_seeds=8, **sweeps[variant])
