"""OGBench family: names, dataset sources, local regeneration (tiny datasets, no network)."""

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO

from drol_jax.envs import ogbench as family_module
from drol_jax.envs import registry
from drol_jax.envs.base import ACTION_CLIP, DATASET_KEYS, DataOptions
from drol_jax.envs.datagen import manipulation, shards
from drol_jax.errors import DatasetError

FAMILY = family_module.FAMILY
CUBE = 'cube-single-play-v0'
SHORT = dict(num_episodes=2, episode_length=40, show_progress=False)


@pytest.fixture(scope='module')
def cube_dir(tmp_path_factory):
    """A tiny generated cube-single-play dataset shared by the loading tests."""
    out = tmp_path_factory.mktemp('cube')
    manipulation.generate_dataset(CUBE, str(out), seed=0, workers=1, **SHORT)
    return out


def no_download(*args):
    raise AssertionError('the download must not be attempted')


def write_foreign_copy(src_dir, dst_dir, name=CUBE, val=True, change=None):
    """Copy a generated dataset without its label, as a file from elsewhere would be."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ('', '-val') if val else ('',):
        with np.load(src_dir / f'{CUBE}{suffix}.npz') as data:
            arrays = {k: data[k] for k in data.files if k != shards.LABEL_KEY}
        np.savez(dst_dir / f'{name}{suffix}.npz', **(change(arrays) if change else arrays))
    return dst_dir / f'{name}.npz'


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


@pytest.mark.parametrize(
    'typed, task_family',
    [
        ('cube-single-play-singletask-task3-v0', 'cube-single-play'),
        ('cube-single', 'cube-single-play'),
        ('cube-double-noisy-task5', 'cube-double-noisy'),
        ('antmaze-large', 'antmaze-large-navigate'),
        ('puzzle-4x4', 'puzzle-4x4-play'),
    ],
)
def test_task_family_is_the_dataset_name_without_version(typed, task_family):
    resolved = registry.resolve(typed)
    assert resolved.family is FAMILY and resolved.task_family == task_family


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


@pytest.mark.slow
def test_generated_puzzle_rewards_follow_button_states(tmp_path):
    import ogbench

    manipulation.generate_dataset('puzzle-3x3-play-v0', str(tmp_path), workers=1, **SHORT)
    env, ds, _ = ogbench.make_env_and_datasets(
        'puzzle-3x3-play-singletask-task4-v0', dataset_dir=str(tmp_path), add_info=True
    )
    assert ds['button_states'].dtype == np.int64 and ds['button_states'].shape[1] == 9
    env.reset()
    target = env.unwrapped._target_button_states
    expected = (ds['button_states'] == target).sum(axis=1) - 9
    np.testing.assert_array_equal(ds['rewards'], expected)


def same_files(dir_a, dir_b, name=CUBE):
    return all(
        (dir_a / f'{name}{s}.npz').read_bytes() == (dir_b / f'{name}{s}.npz').read_bytes()
        for s in ('', '-val')
    )


@pytest.mark.slow
def test_generation_is_deterministic_and_seeded(tmp_path, cube_dir):
    manipulation.generate_dataset(CUBE, str(tmp_path / 'again'), seed=0, workers=2, **SHORT)
    manipulation.generate_dataset(CUBE, str(tmp_path / 'other'), seed=1, workers=1, **SHORT)
    assert same_files(cube_dir, tmp_path / 'again')  # Byte for byte, whatever the workers.
    reference = np.load(cube_dir / f'{CUBE}.npz')
    other = np.load(tmp_path / 'other' / f'{CUBE}.npz')
    assert not np.array_equal(reference['actions'], other['actions'])


def test_generated_files_carry_their_label_inside(cube_dir):
    for suffix in ('', '-val'):
        label = shards.read_label(str(cube_dir / f'{CUBE}{suffix}.npz'))
        assert label['source'] == 'generated' and label['recipe'] == manipulation.RECIPE
        assert (label['seed'], label['episode_length']) == (0, 40)
        assert (label['train_episodes'], label['val_episodes']) == (2, 1)
        assert {'ogbench', 'mujoco', 'numpy'} <= set(label['versions'])
    # Nothing else is left beside the two files: no sidecar, no shards.
    assert sorted(os.listdir(cube_dir)) == [f'{CUBE}-val.npz', f'{CUBE}.npz']


def test_interrupted_generation_resumes_to_identical_bytes(tmp_path, monkeypatch, cube_dir):
    write_shard = shards._write_shard

    def write_then_stop(*args):
        write_shard(*args)
        raise shards._Stop(signal.SIGTERM)  # What the SIGTERM handler raises.

    monkeypatch.setattr(shards, '_write_shard', write_then_stop)
    with pytest.raises(shards.GenerationInterrupted) as info:
        manipulation.generate_dataset(CUBE, str(tmp_path), seed=0, workers=1, **SHORT)
    partial = shards.partial_dir(str(tmp_path), CUBE)
    assert str(info.value) == (
        f'SIGTERM stopped the generation of {CUBE}: 1 of 3 episodes are kept in {partial}; run '
        'the same command again to continue.'
    )
    assert info.value.signum == signal.SIGTERM and not (tmp_path / f'{CUBE}.npz').exists()

    monkeypatch.setattr(shards, '_write_shard', write_shard)
    collected = []
    collect = manipulation._EpisodeCollector.collect
    monkeypatch.setattr(
        manipulation._EpisodeCollector,
        'collect',
        lambda self, s: collected.append(s) or collect(self, s),
    )
    manipulation.generate_dataset(CUBE, str(tmp_path), seed=0, workers=1, **SHORT)
    assert len(collected) == 2  # Only the episodes the first call did not finish.
    assert same_files(cube_dir, tmp_path) and not os.path.exists(partial)


def test_partial_folder_of_other_settings_is_refused(tmp_path):
    partial = tmp_path / f'{CUBE}.partial'
    partial.mkdir()
    (partial / 'settings.json').write_text(json.dumps({'seed': 7}))
    with pytest.raises(DatasetError, match='other settings .*seed.*delete the folder'):
        manipulation.generate_dataset(CUBE, str(tmp_path), seed=0, workers=1, **SHORT)


def fail_if_collecting(*args, **kwargs):
    raise AssertionError('no episode may be collected')


def test_a_family_ogbench_lacks_is_refused_with_suggestions_before_anything_is_written(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(manipulation, '_EpisodeCollector', fail_if_collecting)
    with pytest.raises(
        DatasetError, match=r"no env 'cube-singel-v0'\. Did you mean 'cube-single-p"
    ):
        manipulation.generate_dataset('cube-singel-play-v0', str(tmp_path), **SHORT)
    with pytest.raises(DatasetError, match="Did you mean 'visual-cube-double-play-v0'"):
        manipulation.generate_dataset('visual-cube-dubble-play-v0', str(tmp_path), **SHORT)
    assert list(tmp_path.iterdir()) == []


# A collector that cannot start, in spawned worker processes (they import this module).
BROKEN_COLLECTOR = """
import sys
from drol_jax.envs.datagen import shards

def broken_collector():
    raise RuntimeError('this collector cannot start')

if __name__ == '__main__':
    try:
        shards.collect_shards('x', sys.argv[1], {}, broken_collector, 0, 4, 2, False)
    except RuntimeError as e:
        print(f'raised: {e}')
"""


@pytest.mark.slow
def test_a_worker_that_cannot_start_raises_in_the_caller_instead_of_hanging(tmp_path):
    # A pool replaces a worker whose initializer fails, forever; the error must reach the caller.
    script = tmp_path / 'broken.py'
    script.write_text(BROKEN_COLLECTOR)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / 'out')],
        capture_output=True,
        text=True,
        timeout=600,  # Only a guard: a regression would otherwise hang the suite.
        env={**os.environ, 'PYTHONPATH': REPO},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == 'raised: this collector cannot start'


@pytest.mark.parametrize('where', ['file', 'below_file'])
def test_unwritable_destination_fails_before_the_first_episode(tmp_path, monkeypatch, where):
    monkeypatch.setattr(manipulation, '_EpisodeCollector', fail_if_collecting)
    (tmp_path / 'file').write_text('not a folder')
    out_dir = tmp_path / 'file' if where == 'file' else tmp_path / 'file' / 'sub'
    with pytest.raises(DatasetError, match=f'Cannot write the generated dataset into {out_dir}'):
        manipulation.generate_dataset(CUBE, str(out_dir), **SHORT)
    options = options_for(tmp_path, download=False, generated_dir=str(out_dir))
    with pytest.raises(DatasetError, match='Cannot write the generated dataset into'):
        FAMILY.load('cube-single-play-singletask-v0', options)


def test_datagen_command_line(tmp_path, monkeypatch, capsys):
    args = ['--dataset_name=scene-noisy-v0', '--num_episodes=1', '--episode_length=20']
    assert (
        manipulation.main([*args, f'--dataset_dir={tmp_path}', '--workers=1', '--progress=false'])
        == 0
    )
    assert (tmp_path / 'scene-noisy-v0.npz').is_file()
    assert (tmp_path / 'scene-noisy-v0-val.npz').is_file()
    assert capsys.readouterr().err == ''  # --progress=false hides the bar.
    (tmp_path / 'file').write_text('')
    assert manipulation.main([*args, f'--dataset_dir={tmp_path / "file"}']) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    monkeypatch.setenv('HOME', str(tmp_path))
    assert manipulation.main([*args, '--dataset_dir=~/.ogbench/data']) == 2
    assert (
        manipulation.main(['--dataset_name=antmaze-large-navigate-v0', f'--dataset_dir={tmp_path}'])
        == 2
    )
    assert 'Cannot regenerate' in capsys.readouterr().err


# Dataset sources.


def options_for(tmp_path, **kw):
    return DataOptions(
        **{
            'dataset_dir': str(tmp_path / 'cache'),
            'generated_dir': str(tmp_path / 'generated'),
            'generate_episodes': 2,
            'generate_workers': 1,
            'progress': False,
            **kw,
        }
    )


def test_unreachable_server_falls_back_to_generation(tmp_path, monkeypatch, capsys):
    def unreachable(*args):
        raise family_module.DownloadError('network unreachable')

    monkeypatch.setattr(family_module, 'download_published', unreachable)
    monkeypatch.setattr(manipulation, 'EPISODE_LENGTH', 30)
    options = options_for(tmp_path)
    bundle = FAMILY.load('cube-single-play-singletask-task2-v0', options)

    assert bundle.provenance['source'] == 'generated'
    assert bundle.provenance['generation']['train_episodes'] == 2
    assert bundle.provenance['path'].startswith(str(tmp_path / 'generated'))
    assert not list(tmp_path.glob('cache/**/*.npz'))
    log = capsys.readouterr().err
    assert 'download failed (network unreachable)' in log and 'regenerating 2 + 1' in log
    assert 'ep/s' not in log and 's/ep' not in log  # progress=False hides the bar.
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
    monkeypatch.setattr(manipulation, 'generate_dataset', no_download)
    again = FAMILY.load('cube-single-play-singletask-task2-v0', options)
    assert again.provenance['path'] == bundle.provenance['path']
    assert 'using the locally regenerated copy' in capsys.readouterr().err


def test_generated_copy_in_the_cache_stays_generated(tmp_path, monkeypatch, cube_dir):
    cache = tmp_path / 'cache'
    cache.mkdir()
    for name in (f'{CUBE}.npz', f'{CUBE}-val.npz'):
        shutil.copy(cube_dir / name, cache / name)
    monkeypatch.setattr(family_module, 'download_published', no_download)
    bundle = FAMILY.load('cube-single-play-singletask-v0', options_for(tmp_path))
    assert bundle.provenance == {
        'source': 'generated',
        'path': str(cache / f'{CUBE}.npz'),
        'via': 'dataset_dir',
        'generation': shards.read_label(str(cube_dir / f'{CUBE}.npz')),
        'env_name': 'cube-single-play-singletask-v0',
        'dataset_name': CUBE,
    }


def test_labels_follow_the_file_not_its_folder(tmp_path, cube_dir):
    generated = family_module.provenance_of(str(cube_dir / f'{CUBE}.npz'), 'dataset_path')
    assert (generated['source'], generated['via']) == ('generated', 'dataset_path')
    assert generated['generation'] == shards.read_label(str(cube_dir / f'{CUBE}.npz'))
    # A foreign 2-episode file is unverified, even inside the OGBench cache.
    foreign = str(write_foreign_copy(cube_dir, tmp_path / 'cache'))
    assert family_module.provenance_of(foreign, 'dataset_dir') == {
        'source': 'unverified',
        'path': foreign,
        'via': 'dataset_dir',
        'why': f'not downloaded by drol_jax (no {CUBE}.download.json beside it)',
    }


def test_downloaded_file_is_published_while_it_matches_its_record(tmp_path, monkeypatch, cube_dir):
    server = write_foreign_copy(cube_dir, tmp_path / 'server').parent
    script = (
        'import os, shutil, sys\n'
        "for s in ('.npz', '-val.npz'):\n"
        f'    shutil.copy(os.path.join({str(server)!r}, sys.argv[1] + s), sys.argv[2])'
    )
    monkeypatch.setattr(family_module, 'DOWNLOAD_SCRIPT', script)
    bundle = FAMILY.load('cube-single-play-singletask-v0', options_for(tmp_path))
    assert (bundle.provenance['source'], bundle.provenance['via']) == ('published', 'download')

    # Replaced by other data with the record left in place: no longer vouched for.
    path = write_foreign_copy(
        cube_dir, tmp_path / 'cache', val=False, change=lambda a: {**a, 'actions': -a['actions']}
    )
    changed = family_module.provenance_of(str(path), 'dataset_dir')
    assert changed['source'] == 'unverified'
    assert changed['why'] == f'{path} differs from the file drol_jax downloaded'


def test_dataset_path_needs_no_validation_file(tmp_path, monkeypatch, capsys, cube_dir):
    path = write_foreign_copy(cube_dir, tmp_path / 'elsewhere', name='mine', val=False)
    monkeypatch.setattr(family_module, 'download_published', no_download)
    bundle = FAMILY.load(
        'cube-single-play-singletask-v0', options_for(tmp_path, dataset_path=str(path))
    )
    assert bundle.val_dataset is None and len(bundle.train_dataset['observations']) == 2 * 39
    assert (
        f'no {tmp_path / "elsewhere" / "mine-val.npz"}, no validation losses'
        in capsys.readouterr().err
    )

    missing = tmp_path / 'typo.npz'
    with pytest.raises(DatasetError) as info:
        FAMILY.load(
            'cube-single-play-singletask-v0', options_for(tmp_path, dataset_path=str(missing))
        )
    assert f'no file {missing} (looked for the training .npz there' in str(info.value)


def test_actions_outside_the_unit_box_are_counted(tmp_path, monkeypatch, capsys, cube_dir):
    monkeypatch.setattr(family_module, 'download_published', no_download)
    path = write_foreign_copy(
        cube_dir, tmp_path / 'big', change=lambda a: {**a, 'actions': 2 * a['actions']}
    )
    bundle = FAMILY.load(
        'cube-single-play-singletask-v0', options_for(tmp_path, dataset_path=str(path))
    )
    # ogbench drops each episode's last record (it has no next observation); count the rest.
    outside = total = 0
    for suffix in ('', '-val'):
        with np.load(cube_dir / f'{CUBE}{suffix}.npz') as data:
            kept = data['actions'][~data['terminals']]
        outside, total = outside + np.count_nonzero(np.abs(2 * kept) > 1), total + kept.size
    assert 0 < outside < total
    log = capsys.readouterr().err
    line = f'[ogbench] {path}: {outside} of {total} action values were outside [-1, 1]; clipped'
    assert f'{line} them.\n' in log
    assert log.count('outside [-1, 1]') == 1
    assert np.abs(bundle.train_dataset['actions']).max() == ACTION_CLIP


def test_data_of_another_task_is_a_one_line_error(tmp_path, monkeypatch, cube_dir):
    def wider(arrays):
        extra = np.zeros((len(arrays['observations']), 9), np.float32)
        return {**arrays, 'observations': np.hstack([arrays['observations'], extra])}

    path = write_foreign_copy(cube_dir, tmp_path / 'other', change=wider)
    monkeypatch.setattr(family_module, 'download_published', no_download)
    options = options_for(tmp_path, dataset_path=str(path))
    with pytest.raises(DatasetError) as info:
        registry.load(registry.resolve('cube-single'), options)
    assert str(info.value) == (
        f'The dataset {path} has observations of shape (37,) where the environment has (28,): '
        'it is not data of cube-single-play-singletask-v0 (check --dataset_path and --env_name).'
    )


def test_locomotion_error_names_files_and_folder(tmp_path):
    options = options_for(tmp_path, download=False)
    with pytest.raises(DatasetError) as info:
        FAMILY.load('antmaze-large-navigate-singletask-v0', options)
    message = str(info.value)
    for part in (
        'antmaze-large-navigate-v0.npz',
        'antmaze-large-navigate-v0-val.npz',
        'antmaze-large-navigate-v0.download.json',
        str(tmp_path / 'cache'),
        "download_published('antmaze-large-navigate-v0', '~/.ogbench/data', 60)",
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


@pytest.mark.slow
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


def test_completed_download_lands_in_cache_with_its_record(tmp_path, monkeypatch):
    script = (
        'import sys, os\nfor s in (".npz", "-val.npz"):\n'
        '    open(os.path.join(sys.argv[2], sys.argv[1] + s), "wb").write(b"data" + s.encode())'
    )
    monkeypatch.setattr(family_module, 'DOWNLOAD_SCRIPT', script)
    family_module.download_published(CUBE, str(tmp_path), 5.0)
    assert sorted(os.listdir(tmp_path)) == [
        f'{CUBE}-val.npz',
        f'{CUBE}.download.json',
        f'{CUBE}.npz',
    ]
    record = json.loads((tmp_path / f'{CUBE}.download.json').read_text())
    assert record['sha256'] == {
        f'{CUBE}.npz': hashlib.sha256(b'data.npz').hexdigest(),
        f'{CUBE}-val.npz': hashlib.sha256(b'data-val.npz').hexdigest(),
    }


# Signals during generation (a real child process, as a user's terminal or a scheduler sends them).


def start_datagen(out_dir):
    args = ['--dataset_name=cube-single-play-v0', '--num_episodes=4', '--episode_length=100']
    command = [sys.executable, '-m', 'drol_jax.envs.datagen', *args, f'--dataset_dir={out_dir}']
    return command, subprocess.Popen(
        [*command, '--workers=2', '--progress=false'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Its own process group, as a job started from a terminal.
    )


def wait_for_new_shard(partial, known, proc):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_dir() and len(list(partial.glob('episode-*.npz'))) > known:
            return
        time.sleep(0.1)
    raise AssertionError('no episode was finished in time')


@pytest.mark.slow
def test_sigint_and_sigterm_keep_episodes_and_say_how_to_continue(tmp_path):
    partial = tmp_path / 'cube-single-play-v0.partial'
    # Ctrl-C reaches the whole process group; a scheduler's SIGTERM only the main process.
    for signum, send in ((signal.SIGINT, os.killpg), (signal.SIGTERM, os.kill)):
        known = len(list(partial.glob('episode-*.npz')))
        _, proc = start_datagen(tmp_path)
        wait_for_new_shard(partial, known, proc)
        send(proc.pid, signum)
        out, err = proc.communicate(timeout=60)
        kept = len(list(partial.glob('episode-*.npz')))
        assert proc.returncode == 128 + signum and out == ''
        assert err == (
            f'{signal.Signals(signum).name} stopped the generation of cube-single-play-v0: '
            f'{kept} of 5 episodes are kept in {partial}; run the same command again to '
            'continue.\n'
        )
    _, proc = start_datagen(tmp_path)
    assert proc.wait(timeout=300) == 0
    assert (tmp_path / 'cube-single-play-v0-val.npz').is_file() and not partial.exists()
