"""What runs leave behind: the run directory, results, saved models, TensorBoard logs."""
