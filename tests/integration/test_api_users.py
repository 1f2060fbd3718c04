"""Users through `UserService`, over a real database (SQLite, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set): every time recorded for a user (created, token issued,
disabled) is the injected clock's, never the wall clock's, and the store hands out `User`
records.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import ADMIN, ADMIN_TOKEN, SNAPSHOTS, Backend, backend, make_settings, sandbox
from fastapi.testclient import TestClient

from argus.domain.users import User, UserState
from argus.service.app import create_app
from argus.service.views import iso
from argus.testing import FakeClock
from argus.testing.sandbox import Sandbox

START = 1_500_000_000.25  # 2017: far from today, so the wall clock cannot pass for it


@pytest.fixture
def timed(sandbox: Sandbox, backend: Backend) -> Iterator[tuple[TestClient, FakeClock]]:
    clock = FakeClock(START)
    app = create_app(
        make_settings(sandbox, backend.url),
        snapshots=SNAPSHOTS,
        clock=clock,
        run_scheduler=False,
        run_nodes=False,
        environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN},
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, clock
    app.state.db.dispose()


def test_create_token_and_disable_take_their_times_from_the_injected_clock(timed, backend):
    client, clock = timed
    uid = "clocked"
    r = client.post("/api/v2/users", json={"user_id": uid}, headers=ADMIN.headers)
    assert r.status_code == 201, r.text
    assert r.json() == {"user_id": uid, "state": "ACTIVE", "created_at": iso(START)}
    assert r.json()["created_at"] == "2017-07-14T02:40:00.250000+00:00"

    issued_at = clock.advance(60)
    r = client.post(f"/api/v2/users/{uid}/tokens", headers=ADMIN.headers)
    assert r.status_code == 201, r.text
    rows = backend.rows("SELECT created_at FROM tokens WHERE user_id = :u", u=uid)
    assert [row["created_at"] for row in rows] == [issued_at]

    disabled_at = clock.advance(3600)
    r = client.post(f"/api/v2/users/{uid}:disable", headers=ADMIN.headers)
    assert r.status_code == 200 and r.json() == {"user_id": uid, "state": "DISABLED"}
    store = client.app.state.users.store
    assert store.get(uid) == User(uid, UserState.DISABLED, created_at=START, disabled_at=disabled_at)
    listed = client.get("/api/v2/users", headers=ADMIN.headers).json()["users"]
    assert {"user_id": uid, "state": "DISABLED", "created_at": iso(START)} in listed

    r = client.post(f"/api/v2/users/{uid}:enable", headers=ADMIN.headers)
    assert r.status_code == 200
    assert store.get(uid) == User(uid, UserState.ACTIVE, created_at=START, disabled_at=None)
