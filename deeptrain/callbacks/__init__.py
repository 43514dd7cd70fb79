"""Lightning callbacks: reliability (RNG state, interrupt checkpoints, non-finite losses) and diagnostics."""
