"""Local regeneration of datasets whose collection code ships with the environments' packages.

- ``shards``: the machinery every recipe shares. Episodes from per-episode seeds, written as
  shards as they finish, kept on SIGINT or SIGTERM and continued by the same command, then
  assembled into byte-identical ``.npz`` files with the provenance label inside.
- ``manipulation``: the OGBench manipulation recipe (cube, scene, puzzle) with the package's
  scripted oracles, and the command line ``python -m drol_jax.envs.datagen``.

A recipe is a collector (``shards.EpisodeCollector``: one episode's arrays from its seed) and
the settings and label it records; another recipe, such as one that renders its observations,
plugs in by handing its own collector to ``shards.collect_shards``.
"""
