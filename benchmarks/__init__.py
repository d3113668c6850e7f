"""servesim speed and scale benchmarks.

Run from the repository root::

    python -m benchmarks                       # every case, full size
    python -m benchmarks --quick --only fcfs-100k   # smoke run, 1/10 of the duration
    python -m benchmarks --only aegaeon-fig11  # a family of cases
    python -m benchmarks --compare             # and the change against the last results file
    python -m benchmarks.fingerprint --check FILE   # results still bit-identical?

Each case runs in a fresh subprocess (``benchmarks._worker``), pinned to one CPU, after a
warm-up run that takes numba's compile (or cache load) time out of the measurement. Cases and
families are registered in :mod:`benchmarks.cases`, family figures and the targets table are in
:mod:`benchmarks.families`; results go to ``benchmarks/results/<date>.json``. See
``benchmarks/README.md`` for the columns and the committed reference figures.
"""
