"""Figures that show what DROL does: routing regions and handoffs, K scaling, runtime.

Run ``python -m drol_jax.analysis <voronoi|k-scaling|runtime> --out_dir DIR``; each command
writes a PNG and the numbers behind it (JSON). Tools take the agent file path (``--agent``) and
load it with ``drol_jax.agent_file.load_agent_file``; the library never imports ``agents/``.
"""
