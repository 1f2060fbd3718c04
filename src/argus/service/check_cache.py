"""The cache of offline verl checks that acceptance runs before a task is stored.

Owns which override sets are known to compose cleanly against verl. The check (a Hydra compose,
about half a second) is cached per distinct (verl config directory, workload, overrides): the
overrides are rendered with a fixed placeholder id (`CHECK_ID`, user `CHECK_USER`), so
resubmitting the same spec does not compose again. A check not in the cache runs in the
`CheckPool` (worker processes, fair between users), awaited without holding a thread
(`acheck`) or blocking (`check`). Failures are never cached; the cache keeps the `size` most
recently used sets.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from concurrent.futures import Future

from argus.service.checks import CheckBacklog, CheckPool
from argus.service.ratelimit import RateLimited
from argus.spec.entrypoint import CONFIG_NAMES
from argus.spec.errors import Problem, SpecError
from argus.spec.render import Rendered
from argus.spec.taskspec import TaskSpec

CHECK_ID = "mvp2-check-ppo-00000000-000000-0000--a01"
CHECK_USER = "check"


class CheckCache:
    """Remembers which (config dir, workload, overrides) composed cleanly against verl; what
    it has not seen is composed in `pool`."""

    def __init__(self, pool: CheckPool, size: int = 1024):
        self.pool = pool
        self.size = size
        self._ok: OrderedDict[tuple, bool] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(spec: TaskSpec, rendered: Rendered) -> tuple:
        return (str(rendered.config_dir), spec.workload, tuple(rendered.overrides))

    def known(self, spec: TaskSpec, rendered: Rendered) -> bool:
        """Whether this exact override set composed cleanly before (or needs no compose)."""
        if rendered.config_dir is None:
            return True
        key = self.key(spec, rendered)
        with self._lock:
            if key in self._ok:
                self._ok.move_to_end(key)
                return True
            return False

    def _start(self, user: str, spec: TaskSpec, rendered: Rendered) -> Future:
        try:
            return self.pool.submit(
                user,
                self.key(spec, rendered),
                CONFIG_NAMES[spec.workload],
                list(rendered.overrides),
                str(rendered.config_dir),
                list(spec.overrides),
            )
        except CheckBacklog as exc:
            raise RateLimited(
                f"too many new override sets waiting for their verl check: user {user} has "
                f"{exc.waiting} (service.check_queue_per_user); retry later",
                2.0,
                [
                    Problem(
                        "service.check_queue_per_user",
                        f"at most {self.pool.max_queued} checks of one user wait at once",
                    )
                ],
            ) from None

    def _finish(self, spec: TaskSpec, rendered: Rendered, problems: list[Problem], source: str) -> None:
        if problems:
            raise SpecError(source, problems)  # failures are not cached
        with self._lock:
            self._ok[self.key(spec, rendered)] = True
            while len(self._ok) > self.size:
                self._ok.popitem(last=False)

    async def acheck(self, user: str, spec: TaskSpec, rendered: Rendered, source: str) -> None:
        """`check`, awaited on the event loop without holding a thread."""
        if self.known(spec, rendered):
            return
        problems = await asyncio.wrap_future(self._start(user, spec, rendered))
        self._finish(spec, rendered, problems, source)

    def check(self, user: str, spec: TaskSpec, rendered: Rendered, source: str) -> None:
        """Compose the overrides against verl unless known clean; blocks until done.

        Raises:
            SpecError: an override does not compose.
            RateLimited: `user` has too many checks waiting.
        """
        if self.known(spec, rendered):
            return
        self._finish(spec, rendered, self._start(user, spec, rendered).result(), source)
