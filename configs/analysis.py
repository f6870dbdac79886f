"""Settings of the analyses of trained runs (python -m experiments.analyze). Override any field on the command line,
e.g. ``--config.num_examples=2000`` or ``--config.attacks.pgd_steps='(10,)'``.

The shared settings are explained here; each analysis' own section (``config.<name>``) comes from its file,
``selectivity_jax/analyses/<name>.py`` (``default_settings``), where each of its fields is explained. [paper] marks
values from the studies the analyses reproduce; the others are the project's choice, made so that one run's analyses
take minutes on a CPU and seconds on an accelerator.
"""

import ml_collections
from ml_collections import config_dict

from selectivity_jax import analyses


def get_config():
    config = ml_collections.ConfigDict()
    config.num_examples = 1000   # Test examples analysed (0: the whole test split): a class-balanced subset chosen
    #                              by `seed` from the labels alone, hence the same examples for every run of a sweep.
    config.seed = 0              # The subset, random orders, random starts, random rotations.
    config.layers = ()           # Post-ReLU points to analyse (empty: the run's selectivity layers).
    config.batch_size = 250      # Evaluation batch (any size; the last batch is padded).
    # Where decoded data sets and generated corrupted test sets are cached (None: the run's own data.cache_dir;
    # without either, generated corruptions are made again for every run).
    config.cache_dir = config_dict.placeholder(str)
    for name in analyses.NAMES:
        config[name] = analyses.load(name).default_settings()
    return config
