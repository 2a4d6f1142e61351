"""rvmpq.hw package."""
