"""Speed and capacity of the project's programs on the hardware they are meant for.

`tpu_targets`: the TPU slices users rent, by the names they know, as topologies that XLA's real TPU compiler
(``libtpu``) compiles for on any host; `compile_check`: every program of a config compiled ahead of time for such a
target, with its memory per device, FLOPs and the largest vmapped group that fits (``python -m
experiments.compile_check``).
"""
