"""Environment families (toy, OGBench, D4RL) behind one registry.

Importing the package silences what every OGBench run printed on import and that tells our
users nothing:

- GLFW's "The DISPLAY environment variable is missing", issued when ``dm_control`` (imported by
  ogbench) probes its renderers on a machine without X. Videos render through MuJoCo's own
  backend (``MUJOCO_GL=egl`` or ``osmesa`` on headless machines), which this does not touch.
- ``dm_control``'s absl INFO lines on that probe and on the MuJoCo version (its warnings and
  errors still show).
- gymnasium's "Box low's/high's precision lowered by casting to float32", issued because the
  OGBench envs declare float64 bounds for float32 action spaces; the bounds are +-1 either way.
"""

import logging
import os
import warnings


class _DropDmControlInfo(logging.Filter):
    """Drops absl records below WARNING that come from dm_control's modules."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless it is dm_control chatter."""
        chatter = f'{os.sep}dm_control{os.sep}' in record.pathname
        return record.levelno >= logging.WARNING or not chatter


warnings.filterwarnings('ignore', message=r'.*The DISPLAY environment variable is missing')
warnings.filterwarnings('ignore', message=r'.*precision lowered by casting to float32')
logging.getLogger('absl').addFilter(_DropDmControlInfo())
