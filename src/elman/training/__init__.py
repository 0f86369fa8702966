"""The training loop, metrics, checkpoints and training plots."""
