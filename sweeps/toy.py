"""A sweep that runs in minutes on a laptop CPU: DROL and FQL on the toy multimodal task.

``python -m drol_jax.sweep sweeps/toy.py --parallel 2``, then
``python -m drol_jax.sweep status exp/toy`` and
``python -m drol_jax.plot --runs exp/toy --out exp/toy/curves.png --table``. Small networks,
5000 updates, 2 seeds per job; the same machinery as the paper's sweeps.
"""


def get_sweep():
    """DROL and FQL on ``toy-multimodal``."""
    return dict(
        name='toy',
        envs=['toy-multimodal'],
        agents=['agents/drol.py', 'agents/fql.py'],
        presets=['paper'],
        flags={
            'agent.actor_hidden_dims': (64, 64),
            'agent.value_hidden_dims': (64, 64),
            'agent.batch_size': 64,
            'offline_steps': 5_000,
            'eval_interval': 1_000,
            'eval_episodes': 20,
            'log_interval': 250,
            'save_interval': 1_000,
        },
        seed=0,
        num_seeds=2,
    )
