"""The paper's D4RL experiments: ``python -m drol_jax.sweep sweeps/d4rl.py:VARIANT``.

Variants: ``drol`` (DROL(16), ``--preset=paper``), ``drol_star`` (DROL*, the tuned K and
bc_coef, ``--preset=paper-tuned``) and ``fql`` (FQL's published alpha). The 6 AntMaze and 12
Adroit tasks, 500k updates, evaluation every 100k updates with 50 episodes, 8 seeds per task.
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


def get_sweep(variant):
    """The sweep named by ``variant`` (see the module docstring)."""
    envs = [f'antmaze-{name}-v2' for name in ANTMAZE] + [f'{name}-v1' for name in ADROIT]
    sweeps = {
        'drol': dict(name='d4rl_drol', agents=['agents/drol.py'], presets=['paper']),
        'drol_star': dict(
            name='d4rl_drol_star', agents=['agents/drol.py'], presets=['paper-tuned']
        ),
        'fql': dict(name='d4rl_fql', agents=['agents/fql.py'], presets=['paper']),
    }
    if variant not in sweeps:
        raise ValueError(f'unknown variant {variant!r}; choose one of {", ".join(sweeps)}')
    return dict(envs=envs, flags=RUN_FLAGS, seed=0, num_seeds=8, **sweeps[variant])
