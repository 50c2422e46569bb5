"""core.imaging."""
