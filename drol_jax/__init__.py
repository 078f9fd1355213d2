"""drol_jax: DROL (Dynamic Routing for Offline RL) and FQL in JAX/Flax, side by side."""

__version__ = '0.1.0'
