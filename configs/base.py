"""Shared defaults of every training config; each field's meaning and default is explained once, here.

Model-and-data files (cifar10_resnet20.py, ...) start from `get_config()` and override what differs. Values from
Leavitt & Morcos (ICLR 2021) are marked [paper]; the others are the project's choice, marked [ours], or a cited
recipe the paper follows without restating it.
"""

import ml_collections
from ml_collections import config_dict

# [ours] The symmetric alpha grid (the paper's exact grid is not published in a readable form).
CIFAR10_ALPHAS = (-100.0, -30.0, -10.0, -5.0, -2.0, -1.0, -0.5, -0.2, -0.1, 0.0,
                  0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0)
TINY_IMAGENET_ALPHAS = (-5.0, -2.0, -1.0, -0.5, -0.2, -0.1, 0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0                  # Initialization, data order, augmentation and the train/val split.
    config.alpha = 0.0               # Loss = CE - alpha * network selectivity; < 0 lowers selectivity [paper].
    config.alpha_warmup_epochs = 0.0  # Linear ramp of alpha from 0 over this many epochs (0: none) [ours].

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet20"   # A name of selectivity_jax.models.MODELS.
    # Which post-ReLU layers the selectivity term and the reports use: 'block_outputs' (every residual block's
    # output; every conv ReLU for VGG) [paper], 'all_relus', 'stage_outputs', or a list of layer names.
    config.model.selectivity_layers = "block_outputs"
    # 'batch': BatchNorm after every conv (and every hidden layer of the MLP) [paper]; 'none': no normalization
    # layer, convs get a bias instead. Morcos et al. (ICLR 2018) report that BatchNorm lowers class selectivity.
    config.model.norm = "batch"
    # Dropout rate in [0, 1) on the classifier's input and after every hidden fully connected layer, in training
    # only (selectivity is measured before it); 0: off [paper]. Its masks come from the run's seed, step and alpha.
    config.model.dropout = 0.0

    config.data = ml_collections.ConfigDict()
    # Fields whose default is None are typed placeholders, so that the command line can set them
    # (--config.data.data_dir=DIR).
    config.data.name = "cifar10"     # synthetic | cifar10 | tiny_imagenet | image_folder (data.load_splits).
    config.data.data_dir = config_dict.placeholder(str)  # TFDS data directory (None: ~/tensorflow_datasets).
    config.data.download = True      # Let TFDS download an archive missing from its manual directory.
    config.data.root = config_dict.placeholder(str)  # image_folder: a directory or .tar(.gz), <split>/<class>/*.
    config.data.cache_dir = config_dict.placeholder(str)  # Where decoded uint8 arrays are cached (None: no cache).
    # The official corrupted test set (CIFAR-10-C .npy folder, Tiny-ImageNet-C tree) for the robustness analyses;
    # None: look in TFDS's manual directory, else generate the corruptions (selectivity_jax/data/corrupted.py).
    config.data.corrupted_dir = config_dict.placeholder(str)
    config.data.num_val = 5000       # Validation examples drawn from train per seed (CIFAR10: 45k/5k) [paper].
    config.data.val_per_class = 0    # Alternatively, validation examples per class (Tiny ImageNet: 50) [paper].
    config.data.train_subset = 0     # Use only this many training examples (0: all); for quick runs.
    config.data.test_subset = 0      # Likewise for the test split.
    config.data.mean = config_dict.placeholder(tuple)  # Per-channel normalization in [0, 1] units (None: from train).
    config.data.std = config_dict.placeholder(tuple)

    config.augment = ml_collections.ConfigDict()
    config.augment.crop_padding = 4  # Random crop from a zero-padded image (He et al. 2016); 0: no crop.
    config.augment.flip = True       # Random horizontal flips.

    # Optimization: SGD with momentum, L2 weight decay on kernels only, piecewise-constant learning rate.
    config.batch_size = 128          # Global batch, split over all devices.
    config.learning_rate = 0.1       # At lr_base_batch_size; scaled linearly with batch_size.
    config.lr_base_batch_size = 128
    config.lr_decay_at = (0.5, 0.75)  # Fractions of training at which the learning rate is multiplied ...
    config.lr_decay_factor = 0.1      # ... by this.
    config.lr_warmup_epochs = 0.0    # Linear learning-rate warm-up (0: none).
    config.momentum = 0.9
    config.nesterov = False
    config.weight_decay = 1e-4       # Not applied to BatchNorm parameters or biases.
    config.num_train_steps = 0       # Training length in steps; 0: use num_epochs.
    config.num_epochs = 1.0
    config.compute_dtype = "float32"  # 'bfloat16': bf16 activations, float32 params and selectivity math.
    # Training steps per jitted call (a lax.scan; the same results at any value); 0: the platform's default
    # (train/loop.py default_steps_per_call: 1 on CPU, 16 on GPU/TPU) [ours].
    config.steps_per_call = 0
    # How the convolutions of a vmapped group of models run: 'grouped' (plain vmap: one grouped convolution),
    # 'per_model' (one convolution per model) or 'im2col' (patches x kernels, one batched matmul); 'auto': the
    # platform's default (models/vmap_conv.py default_strategy: per_model on CPU, grouped on GPU/TPU) [ours].
    config.vmap_conv = "auto"
    # The CPU settings the commands apply before JAX starts (selectivity_jax/cpu/: 'auto' runs convolutions on
    # oneDNN, keeps freed memory in the heap on CPU hosts and leaves YNNPACK to elementwise fusions: about 2.5x faster
    # ResNet20 training on CPU, results equal up to float32 rounding, no effect on GPU/TPU programs); 'off': XLA's and
    # glibc's defaults, what the library does when imported without the commands [ours].
    config.cpu_tuning = "auto"

    config.eval_every_epochs = 1     # Validation cadence.
    config.eval_batch_size = 500     # Any size: padding rows are masked out.
    config.checkpoint_every_epochs = 1  # Checkpoint cadence (also at the last step, and at a SIGTERM).
    config.max_checkpoints_to_keep = 2  # On the cadence; a SIGTERM's checkpoint is kept until a newer one exists.
    config.num_devices = 0           # Devices of the data mesh (0: all).
    config.distributed = False       # Call jax.distributed.initialize() (multi-host TPU pods, GPU clusters).
    # Also write the metrics.jsonl rows as TensorBoard event files into <workdir>/tensorboard/ (live curves:
    # `tensorboard --logdir runs/`; needs tensorboardX, else a warning); changes no result [ours].
    config.tensorboard = True

    config.sweep = ml_collections.ConfigDict()
    config.sweep.alphas = CIFAR10_ALPHAS
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
