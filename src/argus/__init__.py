"""Argus: a multi-user training platform for verl on a native Ray cluster."""

__version__ = "0.1.0"
