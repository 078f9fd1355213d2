"""Session settings: compile each XLA program once per test session, and compile it quickly.

Compilation dominates the tests (their networks are tiny), so:

- A compilation cache that lives for one session (a fresh temporary folder, removed at the end,
  so every session starts cold) compiles each program once, even when a new ``jax.jit`` object
  builds it again: the fused block of the next tiny run, or a ``main.py`` subprocess.
- XLA:CPU without backend optimisations and without its newer fusion emitters compiles an
  agent's update about 4x faster (measured: 14.5 s -> 3.3 s for the updates and fused blocks of
  both agents), and runs these tiny networks about 2x slower, which they can afford.

Both are passed through environment variables, so subprocesses inherit them; settings the user
made beforehand are kept. Neither changes what a test asserts: the comparisons are within one
session (fused vs host loop, resume vs uninterrupted, ...).
"""

import glob
import importlib.util
import mmap
import os
import shutil
import tempfile


def _jaxlib_defines(flag: str) -> bool:
    """Whether the installed jaxlib knows an XLA flag (an unknown one aborts the process)."""
    spec = importlib.util.find_spec('jaxlib')
    if spec is None or spec.origin is None:
        return False
    for path in glob.glob(os.path.join(os.path.dirname(spec.origin), '**', '*.so'), recursive=True):
        with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(flag.encode()) >= 0:
                return True
    return False


# pytest-xdist's workers inherit the controller's environment, so the whole session (workers and
# the subprocesses they start) shares the controller's cache, and only the controller removes it.
_CACHE_DIR = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix='drol_jax_tests_xla_cache_')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE_DIR
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
_FAST_COMPILE = {
    'xla_backend_optimization_level': '0',
    'xla_cpu_use_fusion_emitters': 'false',
}
_flags = os.environ.get('XLA_FLAGS', '')
for _name, _value in _FAST_COMPILE.items():
    if _name not in _flags and _jaxlib_defines(_name):
        _flags = f'{_flags} --{_name}={_value}'
os.environ['XLA_FLAGS'] = _flags.strip()

import jax  # noqa: E402 - after the environment above, which jax reads when imported.

# jax may have been imported before this file (a plugin): set the cache for this process too.
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_unconfigure(config):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Tests pinned to one xdist worker (``xdist_group``) run first, the rest in their order.

    A group runs its tests one after another on one worker (the SLURM tests: about 3.5 minutes,
    mostly waiting on the cluster), so it is the session's longest chain; started last, as its
    file's place in the order would have it, the other worker would sit idle at the end.
    """
    items.sort(key=lambda item: item.get_closest_marker('xdist_group') is None)
