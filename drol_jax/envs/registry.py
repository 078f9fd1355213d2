"""One registry of environment families: name resolution, suggestions, loading.

Adding a family means adding it to ``FAMILIES``; nothing else in the code base branches on
environment names.
"""

from __future__ import annotations

import dataclasses

from drol_jax.envs import d4rl, ogbench, toy, visual_toy
from drol_jax.envs.base import DataOptions, EnvBundle, EnvFamily, check_shapes
from drol_jax.errors import ConfigError, UnknownEnvError, did_you_mean

FAMILIES: tuple[EnvFamily, ...] = (toy.FAMILY, visual_toy.FAMILY, ogbench.FAMILY, d4rl.FAMILY)


@dataclasses.dataclass(frozen=True)
class ResolvedEnv:
    """A user-typed name mapped to its family, canonical name and task family.

    ``task_family`` is the key of the published per-task settings (``cube-single-play``,
    ``antmaze-large-play``, ``toy-multimodal``): every task of one dataset shares it.
    """

    name: str
    family: EnvFamily
    task_family: str


def resolve(env_name: str) -> ResolvedEnv:
    """Map a user-typed name to its family and canonical name, or raise ``UnknownEnvError``.

    Cheap: imports no simulator and touches no file, so main.py can reject a typo at once.
    """
    for family in FAMILIES:
        canonical = family.resolve(env_name)
        if canonical is not None:
            return ResolvedEnv(
                name=canonical, family=family, task_family=family.task_family(canonical)
            )
    known = sorted({n for family in FAMILIES for n in family.known_names()})
    hint = did_you_mean(env_name, known, n=3, cutoff=0.5)
    families = ', '.join(
        f'{f.name} ({", ".join(sorted(f.known_names())[:3])}, ...)' for f in FAMILIES
    )
    raise UnknownEnvError(f'Unknown environment {env_name!r}.{hint} Known families: {families}.')


def check_options(resolved: ResolvedEnv, options: DataOptions) -> None:
    """Raise ``ConfigError`` if the family cannot honour a data option (cheap: loads nothing)."""
    check = getattr(resolved.family, 'check_options', None)
    if check is not None:
        check(options)


def is_visual(resolved: ResolvedEnv) -> bool:
    """Whether the task observes images (every such name starts with ``visual-``)."""
    return resolved.name.startswith('visual-')


def check_image_flags(resolved: ResolvedEnv, frame_stack, p_aug, online_steps: int) -> None:
    """Raise ``ConfigError`` for image flags on a state task, or fine-tuning on an image task.

    FQL ignores ``--frame_stack`` and ``--p_aug`` on state data; here they are an error, since a
    user who gives them expects them to act. Online fine-tuning on a visual task is refused, as
    FQL's main.py refuses it.
    """
    if is_visual(resolved):
        if online_steps:
            raise ConfigError(
                f'online fine-tuning (--online_steps) is not supported on the visual task '
                f'{resolved.name} (as in FQL): use --online_steps=0.'
            )
        return
    given = [f'--{n}' for n, v in (('frame_stack', frame_stack), ('p_aug', p_aug)) if v is not None]
    if given:
        raise ConfigError(
            f'{" and ".join(given)} {"apply" if len(given) > 1 else "applies"} to image '
            'observations (the visual-* tasks), but '
            f'{resolved.name} observes states: drop {" and ".join(given)}.'
        )


def load(resolved: ResolvedEnv, options: DataOptions) -> EnvBundle:
    """Make the envs and load the data of a resolved name; ``DatasetError`` if they disagree.

    One env is created to compare its spaces with the data, so a dataset of another task fails
    here even when evaluation is off.
    """
    bundle = resolved.family.load(resolved.name, options)
    env = bundle.make_env()
    try:
        where = bundle.provenance.get('path') or bundle.provenance.get('source')
        check_shapes(env, bundle.train_dataset, where, bundle.env_name)
    finally:
        env.close()
    return bundle
