"""Environment families (toy, OGBench, D4RL) behind one registry: see ``registry.py``."""
