"""Images served from a recovery journal: read-only exports, scratch and live images."""
