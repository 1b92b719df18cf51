"""Locust load test of the counter engine's reference app: ``python -m loadtests run``."""
