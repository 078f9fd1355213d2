"""Sweeps that run in minutes on a laptop CPU, on the toy task: ``sweeps/toy.py[:VARIANT]``.

Variants:

- ``drol_fql`` (the default, ``python -m drol_jax.sweep sweeps/toy.py --parallel 2``): DROL and
  FQL, 2 seeds per job;
- ``panel``: every offline agent of the FQL panel beside DROL: DROL(16), FQL, IQL, ReBRAC, IFQL;
- ``rlpd``: RLPD (``agents/sac.py`` online from scratch, half of each batch from the offline
  data), 2 seeds, one job each (online training runs one seed per process).

Then ``python -m drol_jax.sweep status exp/toy`` and
``python -m drol_jax.plot --runs exp/toy --out exp/toy/curves.png --table``; for the whole panel
side by side, ``python -m drol_jax.plot --runs exp/toy_panel exp/toy_rlpd --out panel.png
--table``. Small networks, 5000 updates (or online steps); the same machinery as the paper's
sweeps.
"""

SMALL = {
    'agent.actor_hidden_dims': (64, 64),
    'agent.value_hidden_dims': (64, 64),
    'agent.batch_size': 64,
}
RUN_FLAGS = {
    **SMALL,
    'offline_steps': 5_000,
    'eval_interval': 1_000,
    'eval_episodes': 20,
    'log_interval': 250,
    'save_interval': 1_000,
}
PANEL = ['agents/drol.py', 'agents/fql.py', 'agents/iql.py', 'agents/rebrac.py', 'agents/ifql.py']


def get_sweep(variant='drol_fql'):
    """The sweep named by ``variant`` (see the module docstring)."""
    sweeps = {
        'drol_fql': dict(name='toy', agents=['agents/drol.py', 'agents/fql.py']),
        'panel': dict(name='toy_panel', agents=PANEL),
        'rlpd': dict(
            name='toy_rlpd',
            agents=['agents/sac.py'],
            flags={
                **RUN_FLAGS,
                'offline_steps': 0,
                'online_steps': 5_000,
                'balanced_sampling': True,
            },
            seeds_per_job=1,
        ),
    }
    if variant not in sweeps:
        raise ValueError(f'unknown variant {variant!r}; choose one of {", ".join(sweeps)}')
    sweep = dict(envs=['toy-multimodal'], presets=['paper'], flags=RUN_FLAGS, seed=0, num_seeds=2)
    return {**sweep, **sweeps[variant]}
