"""Training: state, the pure train/eval steps, the one training loop, checkpoints and metrics."""
