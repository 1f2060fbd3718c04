"""Archiving of ended attempts' driver logs (step 2 of a scheduler pass), and removing their
secrets files.

Owns writing each ended attempt's full log to `<job_root>/logs/driver.log` (atomically, mode
0640), the handling of attempts lost with their Ray head (the log left in the old Ray session
directory, else a line saying it was lost), stopping a Ray job that outlived its ended task,
and the retry count per attempt (after ARCHIVE_TRIES failures the attempt is recorded as
archived with the reason in its log). An ended attempt's secrets file
(`users/<user>/.secrets/<sid>.json`, `argus.scheduler.secrets`) is removed first, at every pass
until the attempt is archived, whether or not Ray can be reached: its job no longer needs it.
`argus.scheduler.loop.Scheduler.archive` calls it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from argus.cluster.errors import ClusterError, JobNotFound
from argus.cluster.session_logs import find_driver_log, lost_log_text, ray_temp_dirs
from argus.domain.records import Attempt
from argus.domain.task import RAY_FINAL_STATUSES
from argus.ports import JobTool
from argus.scheduler.secrets import remove_attempt_secrets
from argus.settings import ArgusSettings
from argus.store.tasks import LOST, TaskStore

log = logging.getLogger("argus.scheduler")
ARCHIVE_TRIES = 5
__all__ = ["ARCHIVE_TRIES", "LOST", "LogArchiver", "write_log"]


class LogArchiver:
    """Archives ended attempts' logs; remembers how often each has failed."""

    def __init__(self, settings: ArgusSettings, store: TaskStore, jobs: JobTool):
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.failures: dict[str, int] = {}

    def archive(self) -> None:
        """Archive ended attempts' logs; stop Ray jobs that outlived their cancelled task.

        Each attempt on its own: one whose log cannot be read (its driver's node died) or
        written is retried at later passes and, after ARCHIVE_TRIES, recorded as archived with
        the reason in `logs/driver.log`, so it never holds up the rest of the pass.
        """
        for attempt in self.store.unarchived_final_attempts():
            sid = attempt.ray_submission_id
            self.remove_secrets(attempt)
            try:
                self.archive_one(attempt)
                self.failures.pop(sid, None)
            except (ClusterError, OSError) as exc:
                tries = self.failures.get(sid, 0) + 1
                self.failures[sid] = tries
                log.warning("archiving the log of %s failed (%d of %d): %s", sid, tries, ARCHIVE_TRIES, exc)
                if tries >= ARCHIVE_TRIES:
                    self.failures.pop(sid, None)
                    try:
                        write_log(attempt, f"[argus] the driver log could not be archived: {exc}\n")
                    except OSError:
                        pass
                    self.store.mark_archived(sid)

    def remove_ended_secrets(self) -> None:
        """Remove every ended attempt's secrets file; asks nothing of Ray, so it runs first in a
        pass, before a sync that may find Ray unreachable."""
        for attempt in self.store.unarchived_final_attempts():
            self.remove_secrets(attempt)

    def remove_secrets(self, attempt: Attempt) -> None:
        """Remove the ended attempt's secrets file, if any; a failure is logged (by path) and
        tried again at the next pass."""
        try:
            remove_attempt_secrets(self.settings.shared_root, attempt)
        except OSError as exc:
            log.warning("removing the secrets file of %s failed: %s", attempt.ray_submission_id, exc)

    def archive_one(self, attempt: Attempt) -> None:
        """Archive one ended attempt's log, or stop its Ray job if it still lives.

        Raises:
            ClusterError: Ray could not be asked (the job's status or its log).
            OSError: the log could not be written.
        """
        sid = attempt.ray_submission_id
        try:
            view = self.jobs.status(sid, diagnose=False)
        except JobNotFound:
            if attempt.ray_status == LOST:  # lost with its head: its old session may hold it
                found = find_driver_log(sid, ray_temp_dirs(self.settings.ray))
                write_log(attempt, lost_log_text(sid, attempt.end_time, found))
            self.store.mark_archived(sid)
            return
        if view.status not in RAY_FINAL_STATUSES:
            self.jobs.stop(sid)  # its task ended (cancelled, timed out) but the job lives
            return
        write_log(attempt, self.jobs.logs(sid))
        self.store.mark_archived(sid, view.status, view.end_time)


def write_log(attempt: Attempt, text: str) -> None:
    """Write `text` as the attempt's `logs/driver.log` (atomically; 0640 whatever the umask)."""
    path = Path(attempt.job_root) / "logs" / "driver.log"
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    tmp = path.with_suffix(".log.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o640)  # the user's own: not world-readable whatever the umask
        f.write(text)
    tmp.replace(path)
