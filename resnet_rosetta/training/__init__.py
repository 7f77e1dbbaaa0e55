"""Training runs in a directory (epochs, checkpoints, resume, data parallel) and their data."""
