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

Every module that sees observations owns its encoder (the critic, the actor, FQL's BC flow): an
agent passes ``make_encoder(config['encoder'])`` as the ``encoder`` field of the library's
networks (``drol_jax.networks``), which store it under the module as ``encoder``
(``modules_critic/encoder/...``) and encode each state once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from drol_jax.errors import ConfigError
from drol_jax.hyperparameters import Rule
from drol_jax.networks import default_init

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


# The ``encoder`` entry of an agent config: None (state inputs) or a name of ``ENCODERS``.
ENCODER_RULE = Rule(
    lambda name: name is None or name in ENCODERS,
    f'None or one of {", ".join(sorted(ENCODERS))}',
)


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
