"""Benchmarks that print tables and write JSON."""
