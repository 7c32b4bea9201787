"""Benchmarks (docs/BENCHMARKS.md), run by bench/run_all.py.

A package so that mypy checks them with the rest.
"""
