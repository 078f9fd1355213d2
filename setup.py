"""drol_jax: DROL (Dynamic Routing for Offline RL) and FQL in JAX/Flax."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name='drol_jax',
    version='0.1.0',
    description='DROL and FQL offline RL agents in JAX/Flax, side by side.',
    long_description=Path(__file__).with_name('README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['drol_jax', 'drol_jax.*']),
    install_requires=[
        'jax>=0.4.30,<0.11',
        'flax>=0.10,<0.13',
        'optax>=0.2.3,<0.3',
        'chex>=0.1.87,<0.2',
        'distrax>=0.1.5,<0.2',  # Gaussian policy distributions (gaussian_actor.GaussianActor).
        'ml_collections>=0.1.1,<2',
        'absl-py>=2.1,<3',
        'ogbench>=1.1.0,<2',
        'numpy>=1.26,<3',
        'tqdm>=4.66,<5',
        'matplotlib>=3.8,<4',
        'imageio>=2.31,<3',
    ],
    extras_require={
        # Accelerator builds of jax: pip install -e ".[cuda12]" (or ".[tpu]").
        'cuda12': ['jax[cuda12]>=0.4.30,<0.11'],
        'tpu': ['jax[tpu]>=0.4.30,<0.11'],
        # D4RL AntMaze/Adroit through Minari datasets and gymnasium-robotics environments.
        'd4rl': ['minari[hdf5,hf]>=0.5.1,<0.6', 'gymnasium-robotics>=1.4,<1.5', 'h5py>=3.8,<4'],
        # Aggregate statistics for plots (rliable breaks with arch 8 and pandas 3).
        'analysis': ['rliable>=1.2,<1.3', 'arch>=7,<8', 'pandas>=2,<3'],
        'wandb': ['wandb>=0.17,<1'],
        'slurm': ['submitit>=1.5,<2'],
        'test': ['pytest>=8,<10', 'pytest-xdist>=3.5,<4', 'ruff>=0.6'],
    },
)
