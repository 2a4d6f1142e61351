"""rvmpq.sw package."""
