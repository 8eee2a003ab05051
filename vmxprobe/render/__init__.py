"""Renderers of a scan: text, the JSON report (schema report-v1.json), Prometheus,
node-feature-discovery and the capability table."""
