"""Ray Tune sweep of ATDWA's γ, T0 and window with k-fold cross-validation (the ``tune`` stage)."""
