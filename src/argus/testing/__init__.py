"""What tests and the demo share: a sandbox of inputs on shared storage, and faithful fakes.

`FakeClock` (here) is the one clock tests move by hand; the fakes of the cluster side
(`FakeJobs`, `FakeSnapshots`, `FakeRayNodes`, `FakeSSH`) are in `argus.testing.fakes`. Each
satisfies its port in `argus.ports`; `argus.testing.conformance` has mypy check that.
"""

from argus.testing.clock import FakeClock

__all__ = ["FakeClock"]
