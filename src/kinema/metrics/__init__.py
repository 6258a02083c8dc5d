"""Prometheus metrics: one registry per app (:class:`~kinema.metrics.instruments.Metrics`),
recorded where things happen (HTTP answers in :mod:`~kinema.metrics.http`, settled jobs in the
dispatcher) and, for what the store knows, read at scrape time (:mod:`~kinema.metrics.collector`).
docs/operations.md ("Monitoring") lists every metric."""
