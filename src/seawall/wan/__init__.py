"""WAN controls: the site's bandwidth throttle, its time-of-day schedule, adaptive compression."""
