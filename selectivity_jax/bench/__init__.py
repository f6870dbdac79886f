"""Speed and capacity of the project's programs on the hardware they are meant for.

`step_timing`: the train step, evaluation and one epoch timed on random data of a config's shape, for single runs
and vmapped groups under every convolution strategy (``python -m experiments.benchmark``); `torch_reference`: the
same ResNet20 step written in PyTorch, the yardstick (torch imported lazily, not a dependency);
`accelerator_check`: every speed question and the paper's CIFAR-10 alpha grid on the device at hand, in one call
(``python -m experiments.accelerator_check``); `tpu_targets`: the TPU slices users rent, by the names they know, as
topologies that XLA's real TPU compiler (``libtpu``) compiles for on any host; `compile_check`: every program of a
config compiled ahead of time for such a target, with its memory per device, FLOPs and the largest vmapped group
that fits (``python -m experiments.compile_check``). The library versions they record come from
`selectivity_jax.records.versions`, as a run's do.
"""
