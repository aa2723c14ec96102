"""Accuracy, latency and cost of results tables: metrics, reports, comparisons, HTML."""
