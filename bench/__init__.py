"""Tether's benchmark harness: Tether against Dagster, Prefect and the physical limits.

Run ``uv run python -m bench --help`` from the repository root; see ``bench/README.md``.
Nothing here is a test: numbers are printed and written to ``bench/results/``, never asserted.
"""
