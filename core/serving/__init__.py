"""core.serving."""
