"""Image encoders (IMPALA ResNets) and how they sit inside the policy and critic networks.

The architecture and parameter names are those of FQL's visual agents, so that a visual
checkpoint moves between the two code bases:

- ``ImpalaEncoder``: uint8 images divided by 255, then ResNet stacks ``stack_blocks_<i>``
  (a 3x3 convolution ``Conv_0``, a 3x3 max-pool of stride 2, then ``num_blocks`` residual blocks
  of two ReLU + 3x3 convolutions ``Conv_1``, ``Conv_2``, ...), a ReLU, the flattened feature map
  and an MLP ``MLP_0`` whose every layer (the last one too) is followed by GELU.
- ``ENCODERS``: ``impala`` (stacks (16, 32, 32), 2 blocks each, MLP (512,)), ``impala_small``
  (1 block per stack), ``impala_large`` (stacks (64, 128, 128), MLP (1024,)) and
  ``impala_debug`` (stacks (4, 4), 1 block; for tests).

Every module that sees observations owns its encoder (the critic, the actor, FQL's BC flow),
stored under the module as ``encoder`` (``modules_critic/encoder/...``). ``EncodedPolicy`` and
``EncodedCritic`` are the library's ``ConditionedPolicy`` and ``EnsembleCritic`` with that
optional ``encoder`` field.

Encoding once per state. The agents evaluate several latents or actions per state
(DROL's K candidates). Here the observations keep their own batch shape and the conditions may
carry extra trailing batch axes: each state is encoded once and its features are broadcast over
the extra axes, which gives the same outputs as encoding a tiled copy of the images, at 1/K of
the encoder's cost.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from drol_jax.errors import ConfigError
from drol_jax.networks import ConditionedPolicy, EnsembleCritic, default_init

IMAGE_AXES = 3  # (height, width, channels): the trailing axes of an image observation.


class ResnetStack(nn.Module):
    """One IMPALA stage: convolution, optional stride-2 max-pool, residual blocks."""

    num_features: int
    num_blocks: int
    max_pooling: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Map (..., H, W, C) to (..., H', W', num_features); H' = ceil(H / 2) when pooling."""
        conv = functools.partial(
            nn.Conv,
            self.num_features,
            kernel_size=(3, 3),
            strides=1,
            padding='SAME',
            kernel_init=nn.initializers.xavier_uniform(),
        )
        x = conv()(x)
        if self.max_pooling:
            x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='SAME')
        for _ in range(self.num_blocks):
            residual = x
            x = conv()(nn.relu(x))
            x = conv()(nn.relu(x))
            x = x + residual
        return x


class FeatureMLP(nn.Module):
    """Dense layers each followed by GELU (then LayerNorm if asked), the last one included."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Apply the layers to the last axis of ``x``."""
        for width in self.hidden_dims:
            x = nn.gelu(nn.Dense(width, kernel_init=default_init())(x))
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return x


class ImpalaEncoder(nn.Module):
    """IMPALA ResNet encoder of uint8 images (..., H, W, C) to features (..., mlp_hidden_dims[-1]).

    ``dropout_rate`` (None: off) drops features after each stack while ``train`` is true; it then
    needs a ``'dropout'`` rng. ``width`` multiplies every stack's channels.
    """

    width: int = 1
    stack_sizes: Sequence[int] = (16, 32, 32)
    num_blocks: int = 2
    dropout_rate: float | None = None
    mlp_hidden_dims: Sequence[int] = (512,)
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        """Features of a batch of images (any number of leading batch axes)."""
        x = observations.astype(jnp.float32) / 255.0
        # One dropout module for every stack, so its masks follow FQL's rng stream.
        dropout = (
            None if self.dropout_rate is None else nn.Dropout(self.dropout_rate, name='dropout')
        )
        for i, size in enumerate(self.stack_sizes):
            x = ResnetStack(size * self.width, self.num_blocks, name=f'stack_blocks_{i}')(x)
            if dropout is not None:
                x = dropout(x, deterministic=not train)
        x = nn.relu(x)
        if self.layer_norm:
            x = nn.LayerNorm()(x)
        x = x.reshape((*observations.shape[:-IMAGE_AXES], -1))
        return FeatureMLP(self.mlp_hidden_dims, layer_norm=self.layer_norm, name='MLP_0')(x)


ENCODERS = {
    'impala': ImpalaEncoder,
    'impala_debug': functools.partial(ImpalaEncoder, num_blocks=1, stack_sizes=(4, 4)),
    'impala_small': functools.partial(ImpalaEncoder, num_blocks=1),
    'impala_large': functools.partial(
        ImpalaEncoder, stack_sizes=(64, 128, 128), mlp_hidden_dims=(1024,)
    ),
}


def make_encoder(name: str | None) -> nn.Module | None:
    """A fresh encoder module for an agent's ``encoder`` setting (None: observations as they are).

    Each call returns a new module: a module that owns one gets its own parameters.
    """
    if name is None:
        return None
    if name not in ENCODERS:
        known = ', '.join(sorted(ENCODERS))
        raise ConfigError(f'Unknown encoder {name!r}; known encoders: {known} (or None).')
    return ENCODERS[name]()


def encode_like(
    encoder: nn.Module | None,
    observations: jnp.ndarray,
    condition: jnp.ndarray,
    is_encoded: bool = False,
) -> jnp.ndarray:
    """State features broadcast to ``condition``'s batch shape, ready to concatenate with it.

    ``observations`` are encoded (unless ``encoder`` is None or ``is_encoded``), giving features
    of shape ``S + (F,)``; ``condition`` has shape ``S + E + (d,)`` with ``E`` extra batch axes
    (K candidates per state, say), over which each state's features are repeated.
    """
    features = observations if encoder is None or is_encoded else encoder(observations)
    extra = condition.ndim - features.ndim
    if extra < 0:
        raise ValueError(
            f'conditions of shape {condition.shape} have fewer batch axes than the state '
            f'features {features.shape}'
        )
    features = features.reshape((*features.shape[:-1], *(1,) * extra, features.shape[-1]))
    return jnp.broadcast_to(features, (*condition.shape[:-1], features.shape[-1]))


class EncodedPolicy(ConditionedPolicy):
    """``ConditionedPolicy`` on encoded states: ``MLP(concat(encoder(s), *conditions))``.

    Conditions may carry extra trailing batch axes (see ``encode_like``); with
    ``is_encoded=True`` the observations are features already (FQL's flow steps encode once).
    """

    encoder: nn.Module | None = None

    def __call__(self, observations, *conditions, is_encoded: bool = False):
        """Outputs of shape ``conditions[0].shape[:-1] + (output_dim,)``."""
        features = encode_like(self.encoder, observations, conditions[0], is_encoded)
        return super().__call__(features, *conditions)


class EncodedCritic(EnsembleCritic):
    """``EnsembleCritic`` on encoded states; the ensemble members share one encoder."""

    encoder: nn.Module | None = None

    def __call__(self, observations, actions, is_encoded: bool = False):
        """Q-values of shape ``(num_ensembles, *actions.shape[:-1])``."""
        features = encode_like(self.encoder, observations, actions, is_encoded)
        return super().__call__(features, actions)
