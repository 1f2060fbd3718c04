"""The trace simulator: replays a cluster trace through the live scheduling policy.

`trace` loads and checks a trace CSV; `engine` runs the discrete-event replay on a fake
cluster with a fake clock, calling `argus.domain.scheduling.plan` unchanged; `metrics`
computes the figures of a replay. `argus simulate` (argus.client.sim_cli) is the command line over both.
"""

from argus.sim.engine import ClusterShape, FairShare, SimResult, SimulationError, simulate
from argus.sim.metrics import JobRecord, Metrics, measure
from argus.sim.trace import DEFAULT_USERS, Trace, TraceError, TraceJob, load_trace, synthetic_user

__all__ = [
    "DEFAULT_USERS",
    "ClusterShape",
    "FairShare",
    "JobRecord",
    "Metrics",
    "SimResult",
    "SimulationError",
    "Trace",
    "TraceError",
    "TraceJob",
    "load_trace",
    "measure",
    "simulate",
    "synthetic_user",
]
