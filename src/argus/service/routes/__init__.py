"""Thin routers, one per resource; they call services, never SQL."""
