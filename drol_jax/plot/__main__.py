"""``python -m drol_jax.plot``: see ``drol_jax.plot.cli``."""

import sys

from drol_jax.plot.cli import main

sys.exit(main())
