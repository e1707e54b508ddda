"""What operators watch a site with: Prometheus metrics and structured logs."""
