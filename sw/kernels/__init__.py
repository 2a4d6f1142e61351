"""rvmpq.sw.kernels package."""
