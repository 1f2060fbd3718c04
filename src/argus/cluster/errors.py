"""Errors of the cluster adapters: Ray's exceptions are translated into these."""


class ClusterError(RuntimeError):
    """Something about the Ray cluster went wrong."""


class ClusterUnavailable(ClusterError):
    """The Ray dashboard / job server cannot be reached."""


class JobNotFound(ClusterError):
    """Ray has no job with this submission id."""


class SubmissionRefused(ClusterError):
    """Ray refused the submission (for example, the submission id already exists)."""


class PortInUse(ClusterError):
    """A port the local cluster needs is taken by another process."""
