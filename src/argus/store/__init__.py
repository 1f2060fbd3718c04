"""Persistence: tables, migrations and one named function per state transition."""
