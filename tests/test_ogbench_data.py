"""OGBench family: names, dataset sources, local regeneration (tiny datasets, no network)."""

import os
import pickle
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from drol_jax import datagen
from drol_jax.envs import ogbench as family_module
from drol_jax.envs.base import DATASET_KEYS, DataOptions
from drol_jax.errors import DatasetError

FAMILY = family_module.FAMILY
CUBE = 'cube-single-play-v0'
SHORT = dict(num_episodes=2, episode_length=40, show_progress=False)


@pytest.fixture(scope='module')
def cube_dir(tmp_path_factory):
    """A tiny generated cube-single-play dataset shared by the loading tests."""
    out = tmp_path_factory.mktemp('cube')
    datagen.generate_dataset(CUBE, str(out), seed=0, workers=1, **SHORT)
    return out


def no_download(*args):
    raise AssertionError('the download must not be attempted')


# Names.


@pytest.mark.parametrize(
    'typed, canonical',
    [
        ('cube-single-play-singletask-task3-v0', 'cube-single-play-singletask-task3-v0'),
        ('cube-single', 'cube-single-play-singletask-v0'),
        ('cube-single-task3', 'cube-single-play-singletask-task3-v0'),
        ('cube-single-noisy', 'cube-single-noisy-singletask-v0'),
        ('cube-double-noisy-task5', 'cube-double-noisy-singletask-task5-v0'),
        ('scene', 'scene-play-singletask-v0'),
        ('puzzle-4x6-task1', 'puzzle-4x6-play-singletask-task1-v0'),
        ('antmaze-large', 'antmaze-large-navigate-singletask-v0'),
        ('antmaze-medium-explore', 'antmaze-medium-explore-singletask-v0'),
        ('humanoidmaze-giant-stitch-task2', 'humanoidmaze-giant-stitch-singletask-task2-v0'),
        ('antsoccer-arena', 'antsoccer-arena-navigate-singletask-v0'),
        ('pointmaze-teleport-stitch', 'pointmaze-teleport-stitch-singletask-v0'),
    ],
)
def test_resolve(typed, canonical):
    assert FAMILY.resolve(typed) == canonical


@pytest.mark.parametrize(
    'typed',
    [
        'toy-multimodal',
        'cube',
        'cube-single-foo',
        'cube-single-task7',
        'cube-single-navigate',  # Not a dataset type of cube.
        'antmaze-giant-explore',  # OGBench publishes no such dataset.
        'cube-single-play-v0',  # Goal-conditioned dataset name, not a single-task env.
        'cube-single-play-singletask-task3',
    ],
)
def test_resolve_rejects(typed):
    assert FAMILY.resolve(typed) is None


def test_known_names_are_short_and_resolve():
    names = FAMILY.known_names()
    assert {
        'cube-single',
        'cube-single-noisy',
        'scene',
        'puzzle-4x5',
        'antmaze-large-stitch',
    } <= set(names)
    assert all('singletask' not in n and FAMILY.resolve(n) for n in names)


def test_dataset_name_of():
    assert family_module.dataset_name_of('cube-single-play-singletask-task3-v0') == CUBE
    assert family_module.dataset_name_of('scene-noisy-singletask-v0') == 'scene-noisy-v0'


def test_resolve_imports_no_simulator():
    code = (
        'import sys; from drol_jax.envs.ogbench import FAMILY; FAMILY.resolve("cube-single-task2");'
        ' FAMILY.known_names(); heavy = {"ogbench", "mujoco", "gymnasium"};'
        ' print(sorted(heavy & sys.modules.keys()))'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


# Generator output.


def test_generated_cube_loads_through_ogbench(cube_dir):
    import ogbench

    train = np.load(cube_dir / f'{CUBE}.npz')
    assert train['observations'].dtype == np.float32 and train['terminals'].dtype == bool
    assert len(train['observations']) == 2 * 40 and train['terminals'].sum() == 2
    assert np.abs(train['actions']).max() <= 1.0
    # Each record holds the observation before the step and the state it came from.
    np.testing.assert_array_equal(train['observations'][:, :6], train['qpos'][:, :6])
    assert len(np.load(cube_dir / f'{CUBE}-val.npz')['observations']) == 40

    env, ds, val = ogbench.make_env_and_datasets(
        'cube-single-play-singletask-task1-v0', dataset_dir=str(cube_dir)
    )
    assert len(ds['observations']) == 2 * 39 and len(val['observations']) == 39
    assert set(np.unique(ds['rewards'])) <= {-1.0, 0.0}
    assert set(np.unique(ds['masks'])) <= {0.0, 1.0}


def test_generated_puzzle_rewards_follow_button_states(tmp_path):
    import ogbench

    datagen.generate_dataset('puzzle-3x3-play-v0', str(tmp_path), workers=1, **SHORT)
    env, ds, _ = ogbench.make_env_and_datasets(
        'puzzle-3x3-play-singletask-task4-v0', dataset_dir=str(tmp_path), add_info=True
    )
    assert ds['button_states'].dtype == np.int64 and ds['button_states'].shape[1] == 9
    env.reset()
    target = env.unwrapped._target_button_states
    expected = (ds['button_states'] == target).sum(axis=1) - 9
    np.testing.assert_array_equal(ds['rewards'], expected)


def test_generation_is_deterministic_and_seeded(tmp_path, cube_dir):
    datagen.generate_dataset(CUBE, str(tmp_path / 'again'), seed=0, workers=2, **SHORT)
    datagen.generate_dataset(CUBE, str(tmp_path / 'other'), seed=1, workers=1, **SHORT)
    reference = np.load(cube_dir / f'{CUBE}.npz')
    again = np.load(tmp_path / 'again' / f'{CUBE}.npz')
    other = np.load(tmp_path / 'other' / f'{CUBE}.npz')
    for key in reference.files:
        np.testing.assert_array_equal(reference[key], again[key])
    assert not np.array_equal(reference['actions'], other['actions'])


def test_generation_writes_provenance(cube_dir):
    import json

    with open(datagen.provenance_path(str(cube_dir), CUBE)) as f:
        provenance = json.load(f)
    assert provenance['recipe'] == datagen.RECIPE and provenance['seed'] == 0
    assert (provenance['train_episodes'], provenance['val_episodes']) == (2, 1)
    assert provenance['episode_length'] == 40 and provenance['workers'] == 1
    assert {'ogbench', 'mujoco', 'numpy'} <= set(provenance['versions'])


def test_datagen_command_line(tmp_path, monkeypatch, capsys):
    args = ['--dataset_name=scene-noisy-v0', '--num_episodes=1', '--episode_length=20']
    assert datagen.main([*args, f'--dataset_dir={tmp_path}', '--workers=1']) == 0
    assert (tmp_path / 'scene-noisy-v0.npz').is_file()
    assert (tmp_path / 'scene-noisy-v0-val.npz').is_file()
    monkeypatch.setenv('HOME', str(tmp_path))
    assert datagen.main([*args, '--dataset_dir=~/.ogbench/data']) == 2
    assert (
        datagen.main(['--dataset_name=antmaze-large-navigate-v0', f'--dataset_dir={tmp_path}']) == 2
    )
    assert 'Cannot regenerate' in capsys.readouterr().err


# Dataset sources.


def options_for(tmp_path, **kw):
    return DataOptions(
        dataset_dir=str(tmp_path / 'cache'),
        generated_dir=str(tmp_path / 'generated'),
        generate_episodes=2,
        generate_workers=1,
        **kw,
    )


def test_unreachable_server_falls_back_to_generation(tmp_path, monkeypatch, capsys):
    def unreachable(*args):
        raise family_module.DownloadError('network unreachable')

    monkeypatch.setattr(family_module, 'download_published', unreachable)
    monkeypatch.setattr(datagen, 'EPISODE_LENGTH', 30)
    options = options_for(tmp_path)
    bundle = FAMILY.load('cube-single-play-singletask-task2-v0', options)

    assert bundle.provenance['source'] == 'generated'
    assert bundle.provenance['generation']['train_episodes'] == 2
    assert bundle.provenance['path'].startswith(str(tmp_path / 'generated'))
    assert not list(tmp_path.glob('cache/**/*.npz'))
    log = capsys.readouterr().err
    assert 'download failed (network unreachable)' in log and 'regenerating 2 + 1' in log
    assert set(bundle.train_dataset) == set(DATASET_KEYS)
    assert all(v.dtype == np.float32 for v in bundle.train_dataset.values())
    assert len(bundle.train_dataset['observations']) == 2 * 29
    assert np.abs(bundle.train_dataset['actions']).max() <= 1 - 1e-5
    assert len(bundle.val_dataset['observations']) == 29

    env = pickle.loads(pickle.dumps(bundle.make_env))()
    env.reset()
    *_, info = env.step(env.action_space.sample())
    assert 'success' in info

    # A later run reuses the generated files instead of regenerating them.
    monkeypatch.setattr(datagen, 'generate_dataset', no_download)
    again = FAMILY.load('cube-single-play-singletask-task2-v0', options)
    assert again.provenance['path'] == bundle.provenance['path']
    assert 'using the locally regenerated copy' in capsys.readouterr().err


def test_cache_is_used_before_download(tmp_path, monkeypatch, cube_dir):
    cache = tmp_path / 'cache'
    cache.mkdir()
    for name in (f'{CUBE}.npz', f'{CUBE}-val.npz'):
        shutil.copy(cube_dir / name, cache / name)
    monkeypatch.setattr(family_module, 'download_published', no_download)
    bundle = FAMILY.load('cube-single-play-singletask-v0', options_for(tmp_path))
    assert bundle.provenance == {
        'source': 'published',
        'path': str(cache / f'{CUBE}.npz'),
        'via': 'dataset_dir',
        'env_name': 'cube-single-play-singletask-v0',
        'dataset_name': CUBE,
    }


def test_dataset_path_with_provenance_is_reported_generated(tmp_path, monkeypatch, cube_dir):
    monkeypatch.setattr(family_module, 'download_published', no_download)
    options = options_for(tmp_path, dataset_path=str(cube_dir / f'{CUBE}.npz'))
    bundle = FAMILY.load('cube-single-play-singletask-v0', options)
    assert bundle.provenance['source'] == 'generated' and bundle.provenance['via'] == 'dataset_path'


def test_locomotion_error_names_files_and_folder(tmp_path):
    options = options_for(tmp_path, download=False)
    with pytest.raises(DatasetError) as info:
        FAMILY.load('antmaze-large-navigate-singletask-v0', options)
    message = str(info.value)
    for part in (
        'antmaze-large-navigate-v0.npz',
        'antmaze-large-navigate-v0-val.npz',
        str(tmp_path / 'cache'),
        "ogbench.download_datasets(['antmaze-large-navigate-v0']",
        'downloads are disabled',
    ):
        assert part in message


def truncate(data):
    return data[: len(data) // 2]


def zero_middle(data):
    middle = len(data) // 3  # Inside a compressed array: only its checksum reveals the damage.
    return data[:middle] + bytes(64) + data[middle + 64 :]


@pytest.mark.parametrize('damage', [truncate, zero_middle])
def test_corrupt_npz_is_reported(tmp_path, monkeypatch, cube_dir, damage):
    cache = tmp_path / 'cache'
    cache.mkdir()
    (cache / f'{CUBE}.npz').write_bytes(damage((cube_dir / f'{CUBE}.npz').read_bytes()))
    shutil.copy(cube_dir / f'{CUBE}-val.npz', cache / f'{CUBE}-val.npz')
    monkeypatch.setattr(family_module, 'download_published', no_download)
    with pytest.raises(DatasetError, match='corrupt or truncated') as info:
        FAMILY.load('cube-single-play-singletask-v0', options_for(tmp_path))
    assert str(cache / f'{CUBE}.npz') in str(info.value)


def test_missing_key_is_reported(tmp_path, monkeypatch, cube_dir):
    cache = tmp_path / 'cache'
    cache.mkdir()
    shutil.copy(cube_dir / f'{CUBE}.npz', cache / f'{CUBE}.npz')
    with np.load(cube_dir / f'{CUBE}-val.npz') as val:
        np.savez(cache / f'{CUBE}-val.npz', **{k: val[k] for k in val.files if k != 'qpos'})
    monkeypatch.setattr(family_module, 'download_published', no_download)
    with pytest.raises(DatasetError, match='lacks the key.* qpos') as info:
        FAMILY.load('cube-single-play-singletask-v0', options_for(tmp_path))
    assert str(cache / f'{CUBE}-val.npz') in str(info.value)


# The downloader wrapper (the real server is never contacted: the child script is replaced).


def test_stalled_download_is_abandoned_without_leftovers(tmp_path, monkeypatch):
    monkeypatch.setattr(family_module, 'DOWNLOAD_SCRIPT', 'import time; time.sleep(60)')
    start = time.monotonic()
    with pytest.raises(family_module.DownloadError, match='no data received for 1 s'):
        family_module.download_published(CUBE, str(tmp_path), 1.0)
    assert time.monotonic() - start < 10
    assert os.listdir(tmp_path) == []


def test_failed_download_reports_reason_without_leftovers(tmp_path, monkeypatch):
    script = (
        'import sys, os; open(os.path.join(sys.argv[2], sys.argv[1] + ".npz.tmp"), "wb")'
        '.write(b"x" * 100); sys.exit("HTTP Error 404: Not Found")'
    )
    monkeypatch.setattr(family_module, 'DOWNLOAD_SCRIPT', script)
    with pytest.raises(family_module.DownloadError, match='HTTP Error 404'):
        family_module.download_published(CUBE, str(tmp_path), 5.0)
    assert os.listdir(tmp_path) == []


def test_completed_download_lands_in_cache(tmp_path, monkeypatch):
    script = (
        'import sys, os\nfor s in (".npz", "-val.npz"):\n'
        '    open(os.path.join(sys.argv[2], sys.argv[1] + s), "wb").write(b"data")'
    )
    monkeypatch.setattr(family_module, 'DOWNLOAD_SCRIPT', script)
    family_module.download_published(CUBE, str(tmp_path), 5.0)
    assert sorted(os.listdir(tmp_path)) == [f'{CUBE}-val.npz', f'{CUBE}.npz']
