"""The site's Prometheus metrics, as the site manager sees them (``GET /metrics``)."""
