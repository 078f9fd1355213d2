"""The pixel path end to end: run flags, visual envs and their data, regeneration, training.

The fast tests resolve settings, read files and fake the renderer; the slow ones render a real
visual OGBench env through EGL and train on images through main.py.
"""

import functools
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO, agent_file, one_line_error, run_main, small_config

from drol_jax import frames
from drol_jax.envs import ogbench, registry, visual, visual_toy
from drol_jax.envs.datagen import manipulation
from drol_jax.errors import DatasetError, UserError
from drol_jax.run_flags import DataOptions, RunConfig
from drol_jax.settings import resolve

DROL = os.path.join(REPO, 'agents', 'drol.py')
FQL = os.path.join(REPO, 'agents', 'fql.py')
# The FQL README's visual flags, with the debug encoder (its small convolutions compile faster).
PIXEL_FLAGS = ('--frame_stack=3', '--p_aug=0.5', '--agent.encoder=impala_debug')


@pytest.mark.parametrize(
    ('name', 'canonical', 'task_family'),
    [
        ('visual-cube-single', 'visual-cube-single-play-singletask-v0', 'visual-cube-single-play'),
        ('visual-cube-double-task2', 'visual-cube-double-play-singletask-task2-v0', None),
        ('visual-scene-noisy', 'visual-scene-noisy-singletask-v0', 'visual-scene-noisy'),
        ('visual-puzzle-4x4', 'visual-puzzle-4x4-play-singletask-v0', 'visual-puzzle-4x4-play'),
        (
            'visual-puzzle-3x3-play-singletask-task4-v0',
            'visual-puzzle-3x3-play-singletask-task4-v0',
            'visual-puzzle-3x3-play',
        ),
        ('visual-antmaze-large-navigate', 'visual-antmaze-large-navigate-singletask-v0', None),
        (
            'visual-humanoidmaze-medium-stitch',
            'visual-humanoidmaze-medium-stitch-singletask-v0',
            'visual-humanoidmaze-medium-stitch',
        ),
        ('visual-toy-multimodal', 'visual-toy-multimodal', 'visual-toy-multimodal'),
    ],
)
def test_visual_names_resolve(name, canonical, task_family):
    resolved = registry.resolve(name)
    assert resolved.name == canonical and registry.is_visual(resolved)
    assert task_family is None or resolved.task_family == task_family


@pytest.mark.parametrize(
    ('run', 'explicit', 'message'),
    [
        (RunConfig(env_name='cube-single', frame_stack=3), {}, '--frame_stack applies to image'),
        (RunConfig(env_name='toy-multimodal', p_aug=0.5), {}, 'toy-multimodal observes states'),
        (RunConfig(env_name='visual-cube-single', frame_stack=0), {}, '--frame_stack must be >='),
        (RunConfig(env_name='visual-cube-single', p_aug=1.5), {}, '--p_aug must be in [0, 1]'),
        (RunConfig(env_name='visual-scene', online_steps=10), {}, 'not supported on the visual'),
        (RunConfig(env_name='visual-cube-single'), {'encoder': 'resnet'}, 'impala_small'),
    ],
)
def test_pixel_flags_are_checked_before_anything_loads(run, explicit, message):
    with pytest.raises(UserError) as info:
        resolve(run, agent_file(DROL), explicit)
    assert message in str(info.value) and '\n' not in str(info.value).strip()


def test_the_fql_readme_pixel_command_resolves():
    run = RunConfig(env_name='visual-cube-single', frame_stack=3, p_aug=0.5)
    settings = resolve(run, agent_file(FQL), {'encoder': 'impala_small'})
    assert settings.agent_config['encoder'] == 'impala_small'
    assert (settings.run.frame_stack, settings.run.p_aug) == (3, 0.5)


def test_without_data_or_network_a_visual_task_says_what_it_needs(tmp_path):
    options = DataOptions(dataset_dir=str(tmp_path), download=False)
    with pytest.raises(DatasetError) as info:
        ogbench.FAMILY.load('visual-cube-single-play-singletask-v0', options)
    message = str(info.value)
    for needed in (
        'visual-cube-single-play-v0.npz and visual-cube-single-play-v0-val.npz',
        str(tmp_path),
        'download_published(',
        'GPU node with EGL',
        'python -m drol_jax.envs.datagen --dataset_name=visual-cube-single-play-v0',
    ):
        assert needed in message, needed


def test_a_missing_renderer_is_one_clear_error_at_the_start(monkeypatch):
    import drol_jax.evaluation

    monkeypatch.setattr(drol_jax.evaluation, 'render_problem', lambda make_env: 'no EGL device')
    monkeypatch.setenv('MUJOCO_GL', 'egl')
    with pytest.raises(DatasetError, match=r'rendering with MUJOCO_GL=egl fails here \(no EGL'):
        visual.check_rendering(lambda: None, 'visual-cube-single-play-singletask-v0')


class SlowRenderer:
    """A collector whose rendered steps take one second (as Mesa's EGL on a CPU does)."""

    def __init__(self, dataset_name, episode_length):
        self.dataset_name = dataset_name

    def seconds_per_step(self):
        return 1.0


def test_visual_regeneration_refuses_a_job_longer_than_a_day(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(manipulation, '_EpisodeCollector', SlowRenderer)
    with pytest.raises(DatasetError) as info:
        manipulation.generate_dataset('visual-cube-single-play-v0', str(tmp_path), workers=2)
    message = str(info.value)
    # 1000 + 100 episodes of 1001 rendered steps at 1 s over 2 workers.
    assert '1101100 rendered steps at 1.000 s per step' in message
    assert 'about 152.93 hours' in message and '--force' in message
    assert not os.listdir(tmp_path)  # Refused before any work.

    calls = []
    monkeypatch.setattr(manipulation.shards, 'collect_shards', lambda *a: calls.append(a) or 'x')
    monkeypatch.setattr(manipulation.shards, 'count_redraws', lambda *a: 0)
    monkeypatch.setattr(manipulation.shards, 'assemble_dataset', lambda *a: None)
    label = manipulation.generate_dataset(
        'visual-cube-single-play-v0', str(tmp_path), workers=2, force=True
    )
    assert calls and label['env_id'] == 'visual-cube-single-v0'
    assert 'about 152.93 hours' in capsys.readouterr().err


def test_visual_names_regenerate_with_the_state_recipe():
    assert manipulation.parse_dataset_name('visual-puzzle-4x4-noisy-v0') == ('puzzle-4x4', 'noisy')
    assert manipulation.env_id('visual-scene-play-v0') == 'visual-scene-v0'
    assert manipulation.env_id('scene-play-v0') == 'scene-v0'
    with pytest.raises(DatasetError, match='visual-\\* versions'):
        manipulation.parse_dataset_name('visual-antmaze-large-navigate-v0')


def test_videos_of_an_image_task_show_its_observations():
    from drol_jax.evaluation import video_frame

    class NoRenderer:
        def render(self):
            raise AssertionError('an image task needs no second rendering')

    stacked = np.arange(4 * 4 * 9, dtype=np.uint8).reshape(4, 4, 9)
    np.testing.assert_array_equal(video_frame(NoRenderer(), stacked), stacked[..., 6:])


# ---------------------------------------------------------------------------------------------
# Slow: a real visual OGBench env, and training on images.


# In a fresh process: MuJoCo picks its OpenGL backend when first imported, and another test of
# the same worker may have imported it already.
EGL_EVALUATION = """
import functools, sys
import numpy as np
from drol_jax.envs import ogbench
from drol_jax.envs.frame_stack import make_stacked_env
from drol_jax.evaluation import render_problem

make_env = functools.partial(ogbench.make_eval_env, 'visual-cube-single-play-singletask-v0')
problem = render_problem(make_env)
if problem is not None:
    print('SKIP', problem)
    sys.exit(0)
env = make_stacked_env(make_env, 3)
observation, _ = env.reset(seed=0)
assert observation.shape == (64, 64, 9) and observation.dtype == np.uint8
np.testing.assert_array_equal(observation[..., :3], observation[..., 6:])
for _ in range(3):
    observation, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
assert observation.shape == (64, 64, 9) and 'success' in info
assert observation[..., 6:].any()  # The newest frame is a rendered image.
env.close()
print('OK')
"""


@pytest.mark.slow
def test_a_real_visual_ogbench_env_evaluates_a_few_steps_through_egl():
    if os.environ.get('MUJOCO_GL', 'egl') != 'egl':
        pytest.skip(f'MUJOCO_GL={os.environ["MUJOCO_GL"]} is set: this test is about EGL')
    result = subprocess.run(
        [sys.executable, '-c', EGL_EVALUATION],
        cwd=REPO,
        env={**os.environ, 'MUJOCO_GL': 'egl', 'PYTHONPATH': REPO},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    if last.startswith('SKIP'):
        pytest.skip(f'EGL cannot render here: {last[5:]}')
    assert last == 'OK', result.stdout[-2000:]


def eval_lines(output):
    return [line for line in output.splitlines() if re.match(r'step \d+ seed \d+:', line)]


def success_of(line):
    return float(re.search(r'success ([0-9.]+)', line).group(1))


# Trained with impala_debug encoders (small convolutions), frame stack 2 and augmentation; small
# heads and batches, since these runs check the pixel path, not learning.
VISUAL_TOY_ARGS = (
    '--env_name=visual-toy-multimodal',
    '--frame_stack=2',
    '--p_aug=0.5',
    '--agent.encoder=impala_debug',
    '--agent.actor_hidden_dims=(32,32)',
    '--agent.value_hidden_dims=(32,32)',
    '--agent.batch_size=16',
    '--log_interval=25',
    '--eval_episodes=5',
    '--progress=false',
)
# A short run of each agent checks the pixel path end to end (updates on device-built stacks and
# crops, evaluation through the frame stack). Learning is measured by hand instead, because it
# takes 2000 updates of convolutions and 200 evaluation episodes (about 10 CPU minutes; README:
# DROL 0.38 against 0.20 for the best policy blind to the image).
VISUAL_TOY_STEPS = 50


@pytest.mark.slow
@pytest.mark.parametrize('agent', ['drol', 'fql'])
def test_the_visual_toy_task_trains_from_pixels_through_main(agent, tmp_path):
    steps = VISUAL_TOY_STEPS
    result = run_main(
        f'--agent=agents/{agent}.py',
        *VISUAL_TOY_ARGS,
        f'--offline_steps={steps}',
        f'--eval_interval={steps}',
        f'--save_dir={tmp_path}',
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'stacks and crops are built on the device' in result.stdout
    assert f'seed 0, {steps:,} steps' in result.stdout
    evaluations = eval_lines(result.stdout)
    assert [line.split(':')[0] for line in evaluations] == ['step 1 seed 0', f'step {steps} seed 0']
    assert 0.0 <= success_of(evaluations[-1]) <= 1.0, result.stdout[-2000:]


@pytest.mark.slow
def test_a_regenerated_visual_dataset_trains_through_main(tmp_path):
    data_dir = tmp_path / 'data'
    command = [
        sys.executable,
        '-m',
        'drol_jax.envs.datagen',
        '--dataset_name=visual-cube-single-play-v0',
        '--num_episodes=1',
        '--episode_length=12',
        f'--dataset_dir={data_dir}',
        '--workers=1',
        '--progress=false',
    ]
    environment = {**os.environ, 'PYTHONPATH': REPO}
    generated = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=900
    )
    if generated.returncode != 0 and 'Cannot render' in generated.stderr:
        pytest.skip(one_line_error(generated))
    assert generated.returncode == 0, generated.stderr[-2000:]
    path = data_dir / 'visual-cube-single-play-v0.npz'
    # 12 frames of 64x64x3 bytes; 11 transitions of 3 int32 indices and 5 + 3 float32 values.
    assert frames.stored_dataset_bytes(str(path)) == 12 * 64 * 64 * 3 + 11 * (12 + 4 * 8)
    result = run_main(
        '--agent=agents/drol.py',
        '--env_name=visual-cube-single',
        *PIXEL_FLAGS,
        f'--dataset_path={path}',
        '--offline_steps=2',
        '--log_interval=1',
        '--eval_episodes=0',
        '--agent.batch_size=8',
        '--agent.actor_hidden_dims=(32,32)',
        '--agent.value_hidden_dims=(32,32)',
        f'--save_dir={tmp_path}',
        '--progress=false',
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'MUJOCO_GL=egl' in result.stdout and '(frames stored once' not in result.stderr
    assert 'Done: seed 0, 2 steps' in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize('name', ['drol', 'fql'])
def test_image_batches_in_the_fused_block_match_fqls_host_loop(name):
    import chex
    from helpers import create
    from references import host_loop_updates

    from drol_jax.updates import make_train_block, stack_agents, unstack_agent

    file = agent_file(os.path.join(REPO, 'agents', f'{name}.py'))
    config = small_config(file.default_config(), encoder='impala_debug', batch_size=16)
    dataset = frames.from_transitions(visual_toy.make_dataset(size=64, image_size=16))
    sample = functools.partial(frames.sample_batch, frame_stack=2, p_aug=0.5)
    example = frames.batch_at(dataset, np.zeros(1, np.int32), 2)
    agent = create(file.agent_class, config, 0, example['observations'], example['actions'])
    key, num_updates = jax.random.PRNGKey(7), 5

    host_agent, host_key, _ = host_loop_updates(agent, dataset, key, num_updates, 16, sample)
    block = make_train_block(16, sample)
    result = block(stack_agents([agent]), key[None], jax.device_put(dataset), num_updates)
    np.testing.assert_array_equal(np.asarray(result.keys[0]), np.asarray(host_key))
    chex.assert_trees_all_close(
        unstack_agent(result.agents, 0).network.params,
        host_agent.network.params,
        rtol=1e-4,
        atol=1e-5,
    )
