"""Benchmarks (`python -m bench`): speed figures measured on this machine, never asserted in tests."""
