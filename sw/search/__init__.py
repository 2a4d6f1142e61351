"""rvmpq.sw.search package."""
