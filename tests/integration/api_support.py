"""Support for the API suite (test_api.py): the databases, the apps and the calls it makes.

Two backends:

- ``sqlite``: a database file in a temporary directory;
- ``postgres``: the server named by ``ARGUS_TEST_DATABASE_URL`` (for example
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), in a schema of its own
  (``argus_t_<hex>``, created here, selected with ``options=-csearch_path=<schema>`` and dropped
  afterwards). The ``public`` schema is never touched.

Kept out of a conftest.py on purpose: tests/unit imports its own conftest by module name, which a
second conftest here would shadow when both directories are named on the command line.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from argus.cluster.reward_check import LocalRewardChecker
from argus.service.app import create_app
from argus.settings import ArgusSettings, parse_settings
from argus.testing import FakeClock
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import Sandbox, prepare, task_yaml

DATABASE_URL_ENV = "ARGUS_TEST_DATABASE_URL"
SCHEMA_PREFIX = "argus_t_"
MAX_BODY_BYTES = 4096
ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
YAML = "application/yaml"


# The cluster the API suite's views see (the scheduler does not run here): two pools and a
# node without one.
SNAPSHOTS = FakeSnapshots(
    {"w1": 4, "w2": 4, "w3": 8},
    free={"w1": 1, "w2": 4, "w3": 8},
    labels={"w1": {"pool": "h20"}, "w2": {"pool": "h20"}, "w3": {}},
)


@dataclass
class Backend:
    """One database: its URL (what the app gets) and an engine of the test's own on it."""

    name: str
    url: str
    engine: sa.Engine
    schema: str | None = None

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def _with_search_path(url: str, schema: str) -> str:
    """`url` with `options=-csearch_path=<schema>` in its query (libpq passes it on)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def open_backend(kind: str, tmp_dir: Path) -> Iterator[Backend]:
    """A fresh, empty database of `kind` (``sqlite`` or ``postgres``); removed afterwards.

    Skips the calling test when `kind` is ``postgres`` and ``ARGUS_TEST_DATABASE_URL`` is unset.
    """
    if kind == "sqlite":
        url = f"sqlite:///{tmp_dir / 'argus.sqlite3'}"
        engine = sa.create_engine(url)
        try:
            yield Backend("sqlite", url, engine)
        finally:
            engine.dispose()
        return

    base = os.environ.get(DATABASE_URL_ENV)
    if not base:
        pytest.skip(
            f"{DATABASE_URL_ENV} is not set (e.g. "
            f"postgresql+psycopg://postgres@127.0.0.1:5432/test); PostgreSQL not tested"
        )
    schema = SCHEMA_PREFIX + secrets.token_hex(6)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = _with_search_path(base, schema)
        engine = sa.create_engine(url)
        try:
            yield Backend("postgres", url, engine, schema)
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        admin.dispose()


def make_settings(sandbox: Sandbox, url: str) -> ArgusSettings:
    return parse_settings(
        {
            "ray": {"shared_root": str(sandbox.shared_root)},
            "service": {"db_url": url, "max_body_bytes": MAX_BODY_BYTES},
            "scheduler": {"enabled": False},
        },
        "integration test config",
        environ={},
    )


class AppFactory:
    """Builds apps (with their TestClient started) over one database; closes them all."""

    def __init__(self, sandbox: Sandbox, backend: Backend):
        self.sandbox = sandbox
        self.backend = backend
        self._open: list[tuple[Any, TestClient]] = []

    def __call__(self) -> TestClient:
        app = create_app(
            make_settings(self.sandbox, self.backend.url),
            run_scheduler=False,
            snapshots=SNAPSHOTS,
            environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN},
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        self._open.append((app, client))
        return client

    def close(self, client: TestClient) -> None:
        for i, (app, c) in enumerate(self._open):
            if c is client:
                c.__exit__(None, None, None)
                app.state.db.dispose()
                del self._open[i]
                return

    def close_all(self) -> None:
        while self._open:
            self.close(self._open[-1][1])


@dataclass
class User:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


ADMIN = User("admin", ADMIN_TOKEN)


@dataclass
class Api:
    """The module's app, plus the calls the tests make over and over."""

    client: TestClient
    sandbox: Sandbox
    backend: Backend
    _serial: list[int] = field(default_factory=lambda: [0])

    max_body_bytes: int = MAX_BODY_BYTES

    @property
    def admin(self) -> User:
        return ADMIN

    def unique_id(self, prefix: str) -> str:
        self._serial[0] += 1
        return f"{prefix}_{self._serial[0]}_{secrets.token_hex(3)}"

    def create_user(self, user_id: str) -> User:
        """Create `user_id` and issue it a token, as the admin."""
        r = self.client.post("/api/v2/users", json={"user_id": user_id}, headers=ADMIN.headers)
        assert r.status_code == 201, r.text
        r = self.client.post(f"/api/v2/users/{user_id}/tokens", headers=ADMIN.headers)
        assert r.status_code == 201, r.text
        return User(user_id, r.json()["token"])

    def new_user(self, prefix: str = "u") -> User:
        """A user of the calling test's own (a fresh id)."""
        return self.create_user(self.unique_id(prefix))

    def spec(self, workload: str = "ppo", **fields: Any) -> str:
        return task_yaml(self.sandbox, workload, **fields)

    def post_yaml(self, who: User, body: Any, content_type: str | None = YAML, **kw: Any):
        headers = dict(who.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.client.post("/api/v2/tasks", content=body, headers=headers, **kw)

    def submit(self, who: User, text: str | None = None) -> str:
        r = self.post_yaml(who, self.spec() if text is None else text)
        assert r.status_code == 201, r.text
        return r.json()["task_id"]

    def get(self, who: User, path: str, headers: dict[str, str] | None = None, **kw: Any):
        return self.client.get(path, headers={**who.headers, **(headers or {})}, **kw)

    def post(self, who: User, path: str, headers: dict[str, str] | None = None, **kw: Any):
        return self.client.post(path, headers={**who.headers, **(headers or {})}, **kw)

    def list_all(self, who: User, **params: Any) -> list[dict[str, Any]]:
        """Every task `who` may see, following next_cursor (limit 500 per page)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = {"limit": 500, **params, **({"cursor": cursor} if cursor else {})}
            r = self.get(who, "/api/v2/tasks", params=q)
            assert r.status_code == 200, r.text
            out += r.json()["tasks"]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return out


# -- fixtures the API and scheduler test modules share (imported by name: pytest finds them) --
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request, tmp_path_factory) -> Iterator[Backend]:
    with open_backend(request.param, tmp_path_factory.mktemp("db")) as db:
        yield db


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    """Inputs under `<shared_root>/common/` (code snapshots, tiny datasets, a tiny model)."""
    return prepare(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def no_verl_config_override(monkeypatch):
    """The Hydra check uses the verl config of the spec's code_path or the installed verl."""
    monkeypatch.delenv("ARGUS_VERL_CONFIG_DIR", raising=False)


class World(Api):
    """An app whose scheduler runs one pass at a time (`tick`) over faked Ray jobs and a fake
    clock, so tasks get attempts; reward functions are checked in a scrubbed subprocess."""

    jobs: FakeJobs
    clock: FakeClock

    def tick(self) -> None:
        self.client.app.state.scheduler.tick(self.clock.advance(1))


def fake_ray_world(
    sandbox: Sandbox,
    backend: Backend,
    snapshots: FakeSnapshots | None = None,
    environ: dict[str, str] | None = None,
    world: type[World] = World,
) -> Iterator[World]:
    """Yield a `World` (as a fixture body); the app and its database close after."""
    clock, jobs = FakeClock(1_800_000_000.0), FakeJobs()
    jobs.clock = clock
    app = create_app(
        make_settings(sandbox, backend.url),
        jobs=jobs,
        snapshots=snapshots or FakeSnapshots({"w1": 4, "w2": 4}),
        clock=clock,
        run_scheduler=False,
        run_nodes=False,
        environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN, **(environ or {})},
        rewards=LocalRewardChecker(str(sandbox.shared_root)),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        w = world(client, sandbox, backend)
        w.jobs, w.clock = jobs, clock
        yield w
    app.state.db.dispose()


def migrate_to(db: Any, revision: str, down: bool = False) -> None:
    """Move `db` (an `argus.store.db.Database`) to the Alembic `revision`, up or `down`, on its
    write connection (the tests of one migration start from the revision before it)."""
    from alembic import command
    from alembic.config import Config

    from argus.store.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.write.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
