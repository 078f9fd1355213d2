"""Environment families (toy, OGBench, D4RL) behind one registry.

Importing the package silences two warnings that every OGBench run printed and that tell our
users nothing:

- GLFW's "The DISPLAY environment variable is missing", issued when ``dm_control`` (imported by
  ogbench) probes its renderers on a machine without X. Videos render through MuJoCo's own
  backend (``MUJOCO_GL=egl`` or ``osmesa`` on headless machines), which this does not touch.
- gymnasium's "Box low's/high's precision lowered by casting to float32", issued because the
  OGBench envs declare float64 bounds for float32 action spaces; the bounds are +-1 either way.
"""

import warnings

warnings.filterwarnings('ignore', message=r'.*The DISPLAY environment variable is missing')
warnings.filterwarnings('ignore', message=r'.*precision lowered by casting to float32')
