"""rvmpq.sw.runtime package."""
