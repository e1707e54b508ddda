"""Resynchronisation: dirty maps, sync plans, delta digests."""
