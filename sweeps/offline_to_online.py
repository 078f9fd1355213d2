"""Offline-to-online RL as in the FQL paper: ``sweeps/offline_to_online.py:VARIANT``.

``python -m drol_jax.sweep sweeps/offline_to_online.py:fql --dry_run`` lists its jobs. Every
variant but ``rlpd`` trains 1M offline updates, then 1M online steps (one update per environment
step), on the tasks of the FQL README's offline-to-online commands: 5 OGBench default tasks, the
6 D4RL AntMaze tasks and the 4 Adroit ``cloned`` tasks. Variants:

- ``fql``: FQL with its published offline-to-online alpha (``--preset=paper-online``);
- ``iql``, ``rebrac``, ``ifql``: the FQL panel (``--preset=paper-online``). Their agent files
  carry the authors' values for humanoidmaze-medium-navigate only (the FQL README's
  offline-to-online example commands); the other tasks run with the agent file's defaults, and
  each run's ``Settings:`` line says so;
- ``rlpd``: RLPD, i.e. ``agents/sac.py`` trained online from scratch with half of each batch from
  the offline data (``--offline_steps=0 --balanced_sampling``), 1M online steps;
- ``drol16`` and ``drol_star``: DROL(16) and DROL* with their offline settings
  (``--preset=paper`` and ``paper-tuned``): the DROL paper publishes no offline-to-online
  setting, so these are the offline values carried on into fine-tuning.

Evaluation every 100k steps with 50 episodes, 8 seeds per task, one job per seed (online
fine-tuning trains one seed per process).
"""

OGBENCH = [
    f'{family}-singletask-task{number}-v0'
    for family, number in (
        ('humanoidmaze-medium-navigate', 1),
        ('antsoccer-arena-navigate', 4),
        ('cube-double-play', 2),
        ('scene-play', 2),
        ('puzzle-4x4-play', 4),
    )
]
ANTMAZE = ['umaze', 'umaze-diverse', 'medium-play', 'medium-diverse', 'large-play', 'large-diverse']
D4RL = [f'antmaze-{name}-v2' for name in ANTMAZE] + [
    f'{domain}-cloned-v1' for domain in ('pen', 'door', 'hammer', 'relocate')
]
RUN_FLAGS = dict(
    offline_steps=1_000_000,
    online_steps=1_000_000,
    eval_interval=100_000,
    eval_episodes=50,
    log_interval=5_000,
    save_interval=250_000,
)
# RLPD starts online at once, from the offline data.
RLPD_FLAGS = {**RUN_FLAGS, 'offline_steps': 0, 'balanced_sampling': True}


def get_sweep(variant):
    """The sweep named by ``variant`` (see the module docstring)."""
    sweeps = {
        'fql': dict(agents=['agents/fql.py'], presets=['paper-online']),
        'iql': dict(agents=['agents/iql.py'], presets=['paper-online']),
        'rebrac': dict(agents=['agents/rebrac.py'], presets=['paper-online']),
        'ifql': dict(agents=['agents/ifql.py'], presets=['paper-online']),
        'rlpd': dict(agents=['agents/sac.py'], presets=['paper-online'], flags=RLPD_FLAGS),
        'drol16': dict(agents=['agents/drol.py'], presets=['paper']),
        'drol_star': dict(agents=['agents/drol.py'], presets=['paper-tuned']),
    }
    if variant not in sweeps:
        raise ValueError(f'unknown variant {variant!r}; choose one of {", ".join(sweeps)}')
    # Online fine-tuning trains one seed per process: 8 seeds are 8 jobs per task.
    sweep = dict(
        name=f'o2o_{variant}',
        envs=OGBENCH + D4RL,
        flags=RUN_FLAGS,
        seed=0,
        num_seeds=8,
        seeds_per_job=1,
    )
    return {**sweep, **sweeps[variant]}
