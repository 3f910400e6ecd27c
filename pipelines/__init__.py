"""Prefect flows. Thin wiring only: every step is a function in `themes`."""
