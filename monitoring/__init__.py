"""Operational visibility: Prometheus metrics, alerts (log + Redis + webhook), audit journal, status."""
