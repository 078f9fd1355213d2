"""Sweeps: grids of ``main.py`` runs from one file, launched here or on SLURM.

``python -m drol_jax.sweep SWEEP_FILE[:ARGUMENT] --dry_run`` lists the jobs, the cost
(``cost.py``: each job at its own settings, and the wall-clock of a GPU node) and every command;
without ``--dry_run`` it launches them (``--launcher local``, on this machine's CPU or GPUs,
``gpus.py``; ``--launcher slurm``, one job array, ``slurm.py``), and
``python -m drol_jax.sweep status SWEEP_DIR`` shows where they stand. The sweep file format is in
``drol_jax.sweep.spec``; the shipped sweeps (``sweeps/``) reproduce the paper's experiments.

A sweep's folder, ``<save_dir>/<name>/``::

    sweep.json                  the jobs and their commands (written by each launch)
    jobs/<job key>/log.txt      main.py's output, attempt after attempt
    jobs/<job key>/state.json   running, done, stopped or failed (with the error line)
    jobs/<job key>/submitted.json  which launcher took it (SLURM: its array task)
    slurm/                      submitit's scripts and logs
    runs/<run group>/<env>/<agent>/seed<k>/   the run folders (python -m drol_jax.plot reads them)
"""
