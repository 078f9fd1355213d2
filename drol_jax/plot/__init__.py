"""Learning curves and final-score tables from evaluation logs.

Usage::

    python -m drol_jax.plot --runs 'exp/**/eval.csv' --out curves.png [--table [--by task]]

Reads our run folders (``<save_dir>/<run_group>/<env>/<agent>/seed<k>/``) and FQL's
(``exp/<project>/<run_group>/sd000_<timestamp>/``) alike: a run is any folder holding an
``eval.csv``, and its environment, agent, seed and run label come from the ``flags.json``
beside it. Lines and table columns are run labels ('DROL(16)', 'DROL*', 'FQL',
'DROL(16) num_candidates=4'); runs whose agent settings differ are never pooled.

One module per seam, each standing only on those before it:

- ``runs``: find and read runs (``eval.csv``, ``flags.json``), label them, drop reruns;
- ``stats``: align seeds on one step grid, bootstrap bands, final scores, rliable aggregates;
- ``tables``: the final-score table and its Markdown, CSV and LaTeX files;
- ``figures``: the learning-curve figure;
- ``cli``: the command line.

The computations are pure functions; drawing and file writing live in ``figures.draw_curves``,
``tables.write_table`` and ``cli.main``.
"""
