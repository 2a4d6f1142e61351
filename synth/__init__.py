"""rvmpq.synth package."""
