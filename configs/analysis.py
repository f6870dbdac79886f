"""Settings of the analyses of trained runs (experiments/analyze.py and experiments/robustness.py); each number is
explained once, here. Override any field on the command line, e.g. ``--config.num_examples=2000``.

[paper] marks values from the studies the analyses reproduce; the others are the project's choice, made so that one
run's analyses take minutes on a CPU and seconds on an accelerator.
"""

import ml_collections
from ml_collections import config_dict


def get_config():
    config = ml_collections.ConfigDict()
    # Shared by every analysis.
    config.num_examples = 1000   # Test examples analysed (0: the whole test split): a class-balanced subset chosen
    #                              by `seed` from the labels alone, hence the same examples for every run of a sweep.
    config.seed = 0              # The subset, random orders, random starts, random rotations.
    config.layers = ()           # Post-ReLU points to analyse (empty: the run's selectivity layers).
    config.batch_size = 250      # Evaluation batch (any size; the last batch is padded).
    # Where decoded data sets and generated corrupted test sets are cached (None: the run's own data.cache_dir;
    # without either, generated corruptions are made again for every run).
    config.cache_dir = config_dict.placeholder(str)

    # ----- Representation analyses (experiments/analyze.py) -----
    # Rotated responses can be negative, the selectivity index needs non-negative class means:
    # 'shift_class_means' subtracts each unit's smallest class mean (offset-invariant, no example decides alone),
    # 'shift' its minimum over examples, 'rectify' clips at 0 (selectivity_jax/analysis/rotation.py says what each
    # does to the index). basis and rotation apply the same rule to the unit axes, so the comparison is fair, and
    # report the paper's index beside it.

    # basis: selectivity in other orthonormal bases of a layer's units (Leavitt & Morcos 2021).
    config.basis = ml_collections.ConfigDict()
    config.basis.negatives = "shift_class_means"
    config.basis.steps = 200             # Gradient-ascent steps of the optimised rotation (Adam).
    config.basis.learning_rate = 0.01
    config.basis.parametrisation = "cayley"  # Rotation = Cayley transform ('cayley') or exp ('expm') of a skew matrix.

    # rotation: axis-aligned selectivity under random rotations (Bau et al. 2017, Sec. 3.2).
    config.rotation = ml_collections.ConfigDict()
    config.rotation.negatives = "shift_class_means"
    config.rotation.num_t = 11           # Fractions t = 0, 0.1, .., 1 of the Haar-random rotation Q (Q^t) [Bau et al.].
    config.rotation.num_rotations = 1    # Haar rotations drawn per layer (results averaged).

    # similarity: per-layer CKA and PWCCA of each run against alpha = 0 (same seed); seeds at alpha = 0 as the floor.
    config.similarity = ml_collections.ConfigDict()
    config.similarity.measures = ("cka", "pwcca")
    config.similarity.conv = "mean"      # Conv maps: spatial mean per channel ('mean') or positions as samples.
    config.similarity.positions_per_example = 4  # With conv='positions': positions drawn per example (same for all).

    # rs: activation maximisation and Representative Substitution (Chen et al.).
    config.rs = ml_collections.ConfigDict()
    config.rs.objectives = ("am", "iam")  # AM: maximise x_i; IAM: maximise x_i - mean_{j != i} x_j.
    config.rs.steps = 256                # Adam steps of gradient ascent on the input ...
    config.rs.init_scale = 0.1           # ... from mid-grey plus N(0, init_scale^2) noise (pixels in [0, 1]).
    config.rs.learning_rate = 0.05
    config.rs.jitter = 2                 # Random shifts of up to this many pixels per step (0: none).
    config.rs.l2 = 0.0                   # L2 penalty on the input (pixel space, [0, 1]).
    config.rs.blur_every = 4             # Gaussian blur of the input every k steps (0: never) ...
    config.rs.blur_sigma = 0.5           # ... with this sigma in pixels.
    config.rs.max_units = 64             # Units per layer (evenly spaced indices when a layer has more; 0: all).
    config.rs.grid_units = 4             # Image grids show this many most and least selective units per layer.

    # ablation: single-unit importance (Morcos et al. 2018).
    config.ablation = ml_collections.ConfigDict()
    config.ablation.fill = "zero"       # An ablated unit's map becomes 0 [Morcos et al.] or 'mean' (its mean response).
    config.ablation.num_points = 11     # Unit counts at which the cumulative curves are measured (0 .. all units).
    config.ablation.single_units = True  # Also ablate each unit alone: accuracy drop vs selectivity.
    config.ablation.masks_per_call = 8  # Ablation masks evaluated together in one vmapped call (speed only).

    # ----- Robustness analyses (experiments/robustness.py) -----
    # Leavitt & Morcos, "Linking average- and worst-case perturbation robustness via class selectivity and
    # dimensionality". Budgets eps are in pixel units of images in [0, 1].

    # corruptions: accuracy on corrupted test sets, the average case (Hendrycks & Dietterich 2019).
    config.corruptions = ml_collections.ConfigDict()
    config.corruptions.names = ()        # Corruptions evaluated (empty: every one available for the data set).
    config.corruptions.severities = (1, 2, 3, 4, 5)  # Severity levels evaluated (all five of the benchmarks).
    config.corruptions.source = "auto"   # 'official' (CIFAR-10-C / Tiny-ImageNet-C files), 'generated' (our
    #                                      generator), 'auto' (official when present, else generated); recorded per
    #                                      corruption.

    # attacks: accuracy under white-box attacks, the worst case; eps = 0 (clean accuracy) is always added.
    config.attacks = ml_collections.ConfigDict()
    config.attacks.attacks = ("fgsm", "pgd")  # Attacks run.
    config.attacks.norms = ("linf", "l2")     # Threat models, each with its own budgets below.
    config.attacks.linf_epsilons = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # L-inf budgets.
    config.attacks.l2_epsilons = (0.125, 0.25, 0.5, 1.0)  # L2 budgets (our choice for 32x32x3 and 64x64x3 images).
    config.attacks.pgd_steps = (10, 40)       # PGD iterations: one curve per value.
    config.attacks.step_size_factor = 2.5     # PGD step = factor * eps / steps, so the path can cross the ball.
    config.attacks.random_start = True        # PGD starts at a uniform random point of the eps-ball (drawn by seed).

    # gradients: variability of input-unit gradients across samples and units.
    config.gradients = ml_collections.ConfigDict()
    config.gradients.num_examples = 200   # Examples differentiated: a class-balanced subset of the analysed ones.
    config.gradients.max_units = 32       # Units per layer, a random subset drawn by seed (0: every unit).
    config.gradients.unit_chunk_size = 16  # Units differentiated together in one vmapped call (speed/memory only).

    # dimensionality: PCA dimensionality of the representation and of its change under perturbations.
    config.dimensionality = ml_collections.ConfigDict()
    config.dimensionality.threshold = 0.95  # Dimensionality = number of PCA components explaining this fraction of
    #                                         the variance (the participation ratio is reported too).
    config.dimensionality.corruptions = ("gaussian_noise", "defocus_blur", "fog", "contrast")  # One per family.
    config.dimensionality.severity = 3      # Severity of those corruptions.
    config.dimensionality.source = "auto"   # Where their images come from, as config.corruptions.source.
    config.dimensionality.norm = "linf"     # Adversarial change: PGD under this norm ...
    config.dimensionality.epsilon = 4 / 255  # ... at this budget ...
    config.dimensionality.pgd_steps = 10    # ... with this many steps (step 2.5 * eps / steps, random start).
    return config
