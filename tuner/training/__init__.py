"""Training: the trial configuration, the per-trial trainable, metrics and checkpoints."""
