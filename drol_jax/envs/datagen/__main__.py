"""``python -m drol_jax.envs.datagen``: see ``drol_jax.envs.datagen.manipulation``."""

import sys

from drol_jax.envs.datagen.manipulation import main

sys.exit(main())
