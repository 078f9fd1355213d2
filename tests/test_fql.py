"""FQL's flow BC and distillation (issue 2, test 5)."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import interval_dataset, small_config, train_fused

from agents.fql import FQLAgent, get_config

MODES = ((-0.9, -0.5), (0.5, 0.9))


def test_flow_bc_is_bimodal_and_onestep_policy_matches_teacher():
    config = small_config(get_config(), lr=1e-3, alpha=10.0)
    agent = train_fused(FQLAgent, config, interval_dataset(MODES), num_updates=2000)
    observations = jnp.zeros((2000, 2))
    noises = jax.random.normal(jax.random.PRNGKey(3), (2000, 1))
    teacher = np.asarray(agent.compute_flow_actions(observations, noises))[:, 0]
    for low, high in MODES:
        share = np.mean((teacher >= low - 0.1) & (teacher <= high + 0.1))
        assert share > 0.3, (low, high, share)
    assert np.mean(np.abs(teacher) < 0.3) < 0.1  # Few teacher samples between the modes.

    student = np.asarray(agent.network.select('onestep')(observations, noises))[:, 0]
    assert np.mean((np.clip(student, -1, 1) - teacher) ** 2) < 0.02
    # Inference is the one-step policy on fresh noise, clipped to the action box.
    actions = np.asarray(agent.sample_actions(observations, seed=jax.random.PRNGKey(4)))
    assert actions.shape == (2000, 1) and np.all(np.abs(actions) <= 1.0)
