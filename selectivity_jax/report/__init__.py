"""Sweep reports: load the runs of an alpha x seed sweep, summarize them in tables and draw the paper's figures.

`load_sweep(dir)` reads what `selectivity_jax.train.loop.train_and_evaluate` wrote for each run; `summarize` gives
per-alpha means and standard deviations over seeds; `make_figures` draws accuracy and selectivity against alpha,
accuracy against selectivity, selectivity against depth and per-unit selectivity distributions. The command line is
``python -m experiments.report --sweep DIR``. Figures need matplotlib, imported only by
`selectivity_jax.report.figures`.

Reports read results only: this package imports the run directory's files (`selectivity_jax.rundir`) and typed
results (`selectivity_jax.records`), never the training, the sweep or the benchmarks (`selectivity_jax.bench`, home
of the accelerator check).
"""

from selectivity_jax.report.runs import MissingRun, Run, Sweep, load_run, load_sweep
from selectivity_jax.report.tables import (AlphaSummary, csv_columns, markdown_report, mean_std, summarize,
                                           write_csv, write_markdown)

__all__ = [
    "AlphaSummary",
    "MissingRun",
    "Run",
    "Sweep",
    "csv_columns",
    "load_run",
    "load_sweep",
    "markdown_report",
    "mean_std",
    "summarize",
    "write_csv",
    "write_markdown",
]
