"""``python -m drol_jax.sweep``: see ``drol_jax.sweep.cli``."""

import sys

from drol_jax.sweep.cli import main

sys.exit(main())
