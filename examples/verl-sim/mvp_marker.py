"""Marker of this code snapshot.

The stand-in trainers print ``MARKER <value>`` as their first line so a job log
shows which snapshot ran.  Argus' demo and tests write snapshots with other
markers by rewriting this file.
"""

MARKER = "verl-sim-default"
