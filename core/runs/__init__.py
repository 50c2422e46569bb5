"""core.runs."""
