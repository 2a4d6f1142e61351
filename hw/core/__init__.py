"""rvmpq.hw.core package."""
