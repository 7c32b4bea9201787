"""Benchmarks (docs/BENCHMARKS.md): scripts run by bench/run_all.py; a package so mypy checks them."""
