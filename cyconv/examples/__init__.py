"""Runnable examples: ``python -m cyconv.examples.digits``."""
