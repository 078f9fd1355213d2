"""What OGBench's visual tasks need beyond the state-based ones: a renderer and a lot of data.

Every observation of a visual task is a 64x64 camera image that MuJoCo renders, at every step of
evaluation (and of relabelling the data: the env is reset once). ``choose_render_backend`` sets
``MUJOCO_GL`` (the user's choice, else ``egl``: headless and GPU-backed where a GPU exists; on a
CPU-only machine Mesa's EGL renders in software, about 1 s per step) before MuJoCo is imported,
and ``check_rendering`` tries it in a child process, so a missing backend is one clear error at
the start of a run, not a crash at its first evaluation.

The datasets are large (12.3 GB per million 64x64x3 frames, stored once) and cannot be rendered
on a CPU in useful time, so ``missing_data_message`` says which files are needed, where, and how
to fetch or regenerate them.
"""

from __future__ import annotations

import os
import sys

from drol_jax.errors import DatasetError

PREFIX = 'visual-'
DEFAULT_BACKEND = 'egl'
FRAME_BYTES = 64 * 64 * 3  # One published frame.


def is_visual(canonical: str) -> bool:
    """Whether an OGBench name is a visual (pixel-observation) task."""
    return canonical.startswith(PREFIX)


def choose_render_backend() -> str:
    """``MUJOCO_GL`` for this process and its workers: the user's choice, else ``egl``.

    MuJoCo reads the variable when it is first imported; if that already happened, the backend
    it chose is the one in use, and the message says so.
    """
    chosen = os.environ.setdefault('MUJOCO_GL', DEFAULT_BACKEND)
    how = 'set by you' if chosen != DEFAULT_BACKEND or 'mujoco' in sys.modules else 'default'
    print(f'[ogbench] rendering image observations with MUJOCO_GL={chosen} ({how}).', flush=True)
    return chosen


def check_rendering(make_env, env_name: str) -> None:
    """Raise ``DatasetError`` unless the env can reset and render here (tried in a child)."""
    from drol_jax.evaluation import render_problem

    problem = render_problem(make_env)
    if problem is not None:
        backend = os.environ.get('MUJOCO_GL')
        raise DatasetError(
            f'{env_name} observes rendered images, but rendering with MUJOCO_GL={backend} fails '
            f'here ({problem}). Use a machine with a working EGL (a GPU node with its driver, or '
            f"Mesa's libEGL) or set MUJOCO_GL to a backend that works (egl, osmesa, glfw)."
        )


def missing_data_message(dataset_name: str, cache_dir: str, why: str) -> str:
    """Why a visual dataset is unavailable and what to do about it, in one paragraph."""
    command = (
        'python -c "from drol_jax.envs.ogbench import download_published; '
        f"download_published('{dataset_name}', '~/.ogbench/data', 60)\""
    )
    return (
        f'{why}. A visual task trains on {dataset_name}.npz and {dataset_name}-val.npz '
        f'(uint8 camera frames: {12.3:.1f} GB per million frames) in {cache_dir}, or on the '
        f'file given by --dataset_path. On a machine with internet run {command}, then copy '
        f'both files and {dataset_name}.download.json into {cache_dir}. Regenerating the data '
        'renders every frame (about 1 s per frame on a CPU, routine on a GPU node with EGL): '
        f'run `python -m drol_jax.envs.datagen --dataset_name={dataset_name} ...` there (see '
        "the README's Pixel-based OGBench section)."
    )
