"""Observability: structured logs (one line per event) and, later, metrics."""
