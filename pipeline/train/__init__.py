"""Training: the loop, checkpoints, early stopping and the ``train`` stage."""
