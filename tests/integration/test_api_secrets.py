"""Users' secrets through the API, the SDK and the CLI, over a real database (SQLite, and
PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set).

A value goes in once and never comes back: no answer (success or error), no log line, no
database byte holds it in plain text (the SQLite file and its write-ahead log are read raw, the
PostgreSQL rows as stored); only the store, with the server's key, decrypts it. Each user sees
and deletes only their own; a name that could not be a job's environment variable is refused
with the reason; a server without a key answers 503.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_support import ADMIN_TOKEN, Api, Backend, backend, make_settings, sandbox
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from argus.service.api_models import ErrorBody
from argus.service.api_models_secrets import SecretBody, SecretDeleted, SecretList
from argus.service.app import create_app
from argus.store.secrets import SecretUnreadable
from argus.testing import FakeClock
from argus.testing.cli import CliResult
from argus.testing.sandbox import Sandbox

KEY = Fernet.generate_key().decode()
T0 = 1_800_000_000.0
# Distinctive values: any copy of one, anywhere, is found by a plain substring search.
VALUE = "wandb-7f3e9c1d-SECRET-VALUE-b41a"
VALUE2 = "wandb-0c9d2e7a-SECRET-VALUE-NEW-55e1"


class World(Api):
    clock: FakeClock
    bodies: list[str]

    def put(self, who, name: str, headers: dict[str, str] | None = None, **kw: Any):
        r = self.client.put(f"/api/v2/secrets/{name}", headers={**who.headers, **(headers or {})}, **kw)
        self.bodies.append(r.text)
        return r

    def list(self, who) -> dict[str, Any]:
        r = self.get(who, "/api/v2/secrets")
        self.bodies.append(r.text)
        assert r.status_code == 200, r.text
        return SecretList.model_validate(r.json()).model_dump(mode="json")

    def delete(self, who, name: str):
        r = self.client.delete(f"/api/v2/secrets/{name}", headers=who.headers)
        self.bodies.append(r.text)
        return r

    @property
    def store(self):
        return self.client.app.state.secrets.store


def _app(sandbox: Sandbox, backend: Backend, environ: dict[str, str], clock: FakeClock, **service: Any):
    settings = make_settings(sandbox, backend.url)
    if service:
        settings = settings.model_copy(update={"service": settings.service.model_copy(update=service)})
    return create_app(settings, clock=clock, run_scheduler=False, run_nodes=False, environ=environ)


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    clock = FakeClock(T0)
    app = _app(sandbox, backend, {"MVP_INTERNAL_TOKEN": ADMIN_TOKEN, "ARGUS_SECRETS_KEY": KEY}, clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        w = World(client, sandbox, backend)
        w.clock, w.bodies = clock, []
        yield w
    app.state.db.dispose()


def _raw_database(backend: Backend) -> bytes:
    """Every byte the database holds for `secrets`: the SQLite file and its log, or PG's rows."""
    if backend.name == "sqlite":
        path = Path(sa.engine.make_url(backend.url).database or "")
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    return repr(backend.rows("SELECT * FROM secrets")).encode()


# -- set, list, replace, delete ----------------------------------------------------------------
def test_a_secret_is_set_listed_replaced_and_deleted_and_never_shown(world, caplog):
    caplog.set_level(logging.DEBUG)
    alice = world.new_user("alice")
    r = world.put(alice, "WANDB_API_KEY", json={"value": VALUE})
    assert r.status_code == 201, r.text
    first = SecretBody.model_validate(r.json()).model_dump(mode="json")
    assert first == r.json() and set(first) == {"name", "created_at", "updated_at"}
    assert first["name"] == "WANDB_API_KEY" and first["created_at"] == first["updated_at"]
    assert world.list(alice) == {"secrets": [first]}

    world.clock.advance(60)
    r = world.put(alice, "WANDB_API_KEY", json={"value": VALUE2})
    assert r.status_code == 200, r.text  # replaced, not new
    assert r.json()["created_at"] == first["created_at"] and r.json()["updated_at"] > first["updated_at"]
    assert world.put(alice, "HF_TOKEN", json={"value": VALUE}).status_code == 201
    assert [s["name"] for s in world.list(alice)["secrets"]] == ["HF_TOKEN", "WANDB_API_KEY"]
    # Only the store, with the key, gives a value back.
    assert world.store.values(alice.user_id, ["WANDB_API_KEY", "HF_TOKEN"]) == {
        "WANDB_API_KEY": VALUE2,
        "HF_TOKEN": VALUE,
    }
    assert world.store.missing(alice.user_id, ["HF_TOKEN", "NOPE", "NOPE"]) == ["NOPE"]
    with pytest.raises(KeyError) as missing:
        world.store.values(alice.user_id, ["HF_TOKEN", "NOPE"])
    assert missing.value.args == ("NOPE",)

    r = world.delete(alice, "HF_TOKEN")
    assert r.status_code == 200 and SecretDeleted.model_validate(r.json()).model_dump() == {
        "name": "HF_TOKEN",
        "deleted": True,
    }
    assert [s["name"] for s in world.list(alice)["secrets"]] == ["WANDB_API_KEY"]
    r = world.delete(alice, "HF_TOKEN")
    assert r.status_code == 404 and r.json()["message"] == "no secret HF_TOKEN"

    for text in world.bodies:
        assert VALUE not in text and VALUE2 not in text
    assert VALUE not in caplog.text and VALUE2 not in caplog.text


def test_no_database_byte_holds_a_value_in_plain_text(world, backend):
    bob = world.new_user("bob")
    assert world.put(bob, "HF_TOKEN", json={"value": VALUE}).status_code == 201
    rows = backend.rows("SELECT * FROM secrets WHERE user_id = :u", u=bob.user_id)
    assert [(r["name"], set(r)) for r in rows] == [
        ("HF_TOKEN", {"user_id", "name", "ciphertext", "created_at", "updated_at"})
    ]
    assert VALUE not in rows[0]["ciphertext"]
    assert Fernet(KEY.encode()).decrypt(rows[0]["ciphertext"].encode())  # it is the key's ciphertext
    raw = _raw_database(backend)
    assert rows[0]["ciphertext"].encode() in raw or backend.name == "postgres"
    for value in (VALUE, VALUE2):
        assert value.encode() not in raw and value.encode("utf-16-le") not in raw


def test_a_ciphertext_moved_to_another_user_is_not_decrypted_for_them(world, backend):
    carol, dave = world.new_user("carol"), world.new_user("dave")
    assert world.put(carol, "HF_TOKEN", json={"value": VALUE}).status_code == 201
    assert world.put(dave, "HF_TOKEN", json={"value": "dave's own"}).status_code == 201
    [carols] = backend.rows("SELECT ciphertext FROM secrets WHERE user_id = :u", u=carol.user_id)
    with backend.engine.begin() as conn:  # someone with write access to the database copies it
        conn.execute(
            sa.text("UPDATE secrets SET ciphertext = :c WHERE user_id = :d AND name = 'HF_TOKEN'"),
            {"c": carols["ciphertext"], "d": dave.user_id},
        )
    with pytest.raises(SecretUnreadable) as err:
        world.store.values(dave.user_id, ["HF_TOKEN"])
    assert VALUE not in str(err.value) and "HF_TOKEN" in str(err.value)
    assert world.store.values(carol.user_id, ["HF_TOKEN"]) == {"HF_TOKEN": VALUE}


# -- users apart -------------------------------------------------------------------------------
def test_a_user_never_sees_nor_deletes_another_users_secrets(world):
    erin, frank = world.new_user("erin"), world.new_user("frank")
    assert world.put(erin, "WANDB_API_KEY", json={"value": VALUE}).status_code == 201
    assert world.list(frank) == {"secrets": []}
    r = world.delete(frank, "WANDB_API_KEY")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert [s["name"] for s in world.list(erin)["secrets"]] == ["WANDB_API_KEY"]
    # The same name is frank's own secret: erin's value is untouched.
    assert world.put(frank, "WANDB_API_KEY", json={"value": VALUE2}).status_code == 201
    assert world.store.values(erin.user_id, ["WANDB_API_KEY"]) == {"WANDB_API_KEY": VALUE}
    assert world.store.values(frank.user_id, ["WANDB_API_KEY"]) == {"WANDB_API_KEY": VALUE2}
    # The admin has secrets of their own, and sees nobody else's either.
    assert erin.user_id not in repr(world.list(world.admin))
    assert world.delete(world.admin, "WANDB_API_KEY").status_code == 404
    assert world.client.get("/api/v2/secrets").status_code == 401


# -- input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, reason",
    [
        ("LD_PRELOAD", "dynamic loader"),
        ("RAY_RUNTIME_ENV_HOOK", "configures Ray itself"),
        ("PYTHONPATH", "set by Argus from code_path"),
        ("ARGUS_POOL", "set by Argus from pool"),
        ("ARGUS_ANYTHING", "Argus's own configuration"),
        ("CUDA_VISIBLE_DEVICES", "Ray assigns the job's GPUs"),
        ("PATH", "decides which programs the job runs"),
        ("9LIVES", "must be an environment variable name"),
        ("A-B", "must be an environment variable name"),
        ("X" * 129, "must be an environment variable name"),
    ],
)
def test_a_name_that_cannot_be_a_jobs_variable_is_refused_with_the_reason(world, name, reason):
    user = world.new_user("names")
    for r in (world.put(user, name, json={"value": VALUE}), world.delete(user, name)):
        assert r.status_code == 400, r.text
        body = ErrorBody.model_validate(r.json()).model_dump()
        assert body["error"] == "bad_request" and len(body["problems"]) == 1
        assert body["problems"][0]["field"] == "name" and reason in body["problems"][0]["message"], body
        assert VALUE not in r.text
    assert world.list(user) == {"secrets": []}


@pytest.mark.parametrize(
    "body, field, reason",
    [
        ({"value": ""}, "value", "must not be empty"),
        ({"value": 12}, "value", "must be a string"),
        ({"value": None}, "value", "is required"),
        ({}, "value", "is required"),
        ({"value": f"a\x00{VALUE}"}, "value", "NUL"),
        ({"value": VALUE, "note": VALUE}, "note", "unknown key"),
        ([VALUE], "<body>", "must be a JSON object"),
        (VALUE, "<body>", "must be a JSON object"),
    ],
)
def test_a_bad_body_is_refused_without_echoing_the_value(world, body, field, reason):
    user = world.new_user("bodies")
    r = world.put(user, "HF_TOKEN", json=body)
    assert r.status_code == 400, r.text
    problems = ErrorBody.model_validate(r.json()).problems
    assert [(p.field, reason in p.message) for p in problems] == [(field, True)], r.text
    assert VALUE not in r.text
    assert world.list(user) == {"secrets": []}


def test_a_body_that_is_not_json_or_missing_is_refused_without_echoing_it(world):
    user = world.new_user("raw")
    for content in (f'{{"value": "{VALUE}"'.encode(), f"value={VALUE}".encode(), b""):
        r = world.put(user, "HF_TOKEN", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert VALUE not in r.text and r.json()["error"] == "bad_request"
    assert world.list(user) == {"secrets": []}


def test_a_value_over_64_kib_is_refused(sandbox, backend):
    env = {"MVP_INTERNAL_TOKEN": ADMIN_TOKEN, "ARGUS_SECRETS_KEY": KEY}
    app = _app(sandbox, backend, env, FakeClock(T0), max_body_bytes=1024 * 1024)
    with TestClient(app, raise_server_exceptions=False) as client:
        w = World(client, sandbox, backend)
        w.bodies = []
        user = w.new_user("big")
        big = VALUE + "x" * (64 * 1024 - len(VALUE) + 1)
        r = w.put(user, "HF_TOKEN", json={"value": big})
        assert r.status_code == 400 and r.json()["problems"] == [
            {"field": "value", "message": "must be at most 65536 bytes (UTF-8), got 65537"}
        ]
        assert VALUE not in r.text
        assert w.put(user, "HF_TOKEN", json={"value": big[:-1]}).status_code == 201  # exactly 64 KiB
        assert w.store.values(user.user_id, ["HF_TOKEN"]) == {"HF_TOKEN": big[:-1]}
    app.state.db.dispose()


def test_without_a_key_secrets_are_disabled_with_503(sandbox, backend):
    app = _app(sandbox, backend, {"MVP_INTERNAL_TOKEN": ADMIN_TOKEN}, FakeClock(T0))
    with TestClient(app, raise_server_exceptions=False) as client:
        w = World(client, sandbox, backend)
        w.bodies = []
        user = w.new_user("nokey")
        r = w.put(user, "HF_TOKEN", json={"value": VALUE})
        assert r.status_code == 503 and r.json() == {
            "error": "unavailable",
            "message": "secrets are disabled: the server has no ARGUS_SECRETS_KEY",
            "problems": [],
        }
        assert w.list(user) == {"secrets": []}  # names (none) can still be listed
        assert w.put(user, "LD_PRELOAD", json={"value": VALUE}).status_code == 400  # the name first
    app.state.db.dispose()


def test_the_routes_are_documented(world):
    spec = world.client.get("/openapi.json").json()
    put = spec["paths"]["/api/v2/secrets/{name}"]["put"]
    body = put["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = spec["components"]["schemas"][ref]
    assert set(schema["properties"]) == {"value"} and schema["additionalProperties"] is False
    assert schema["properties"]["value"]["writeOnly"] is True
    assert {"200", "201", "400", "503"} <= set(put["responses"]) and "422" not in put["responses"]
    assert set(spec["paths"]["/api/v2/secrets"]) == {"get"}
    assert set(spec["paths"]["/api/v2/secrets/{name}"]) == {"put", "delete"}


# -- SDK and CLI -------------------------------------------------------------------------------
def _cli(args: list[str], stdin: str | None = None) -> CliResult:
    from argus.client.cli import app as cli_app

    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    return CliResult(runner.invoke(cli_app, args, input=stdin, catch_exceptions=False))


def test_cli_and_sdk_set_list_and_delete_without_showing_a_value(world, monkeypatch):
    """`argus secrets set|list|delete` and the SDK, over the real app (no network)."""
    from argus.client import service_cli
    from argus.client.sdk import ArgusAPIError, ArgusClient

    transport = world.client._transport  # the TestClient's: requests go to the app in-process
    monkeypatch.setattr(service_cli, "make_client", lambda url, token: ArgusClient(url, token, transport=transport))
    user = world.new_user("cli")
    auth = ["--url", "http://testserver", "--token", user.token]

    out = _cli(["secrets", "set", "WANDB_API_KEY", *auth], stdin=VALUE + "\n")
    assert out.exit_code == 0, out.err_text
    assert out.out_text.startswith("secret WANDB_API_KEY set (")
    assert world.store.values(user.user_id, ["WANDB_API_KEY"]) == {"WANDB_API_KEY": VALUE}  # one newline dropped
    out = _cli(["secrets", "set", "HF_TOKEN", *auth, "--json"], stdin=VALUE2 + "\n\n")
    assert out.exit_code == 0 and set(out.json()) == {"name", "created_at", "updated_at"}
    assert world.store.values(user.user_id, ["HF_TOKEN"]) == {"HF_TOKEN": VALUE2 + "\n"}  # only one is dropped

    listed = _cli(["secrets", "list", *auth])
    assert listed.exit_code == 0 and "HF_TOKEN" in listed.out_text and "WANDB_API_KEY" in listed.out_text
    as_json = _cli(["secrets", "list", *auth, "--json"]).json()
    assert [s["name"] for s in as_json["secrets"]] == ["HF_TOKEN", "WANDB_API_KEY"]

    empty = _cli(["secrets", "set", "HF_TOKEN", *auth], stdin="\n")
    assert empty.exit_code == 2 and "no value for HF_TOKEN" in empty.err_text
    denied = _cli(["secrets", "set", "LD_PRELOAD", *auth], stdin=VALUE)
    assert denied.exit_code == 2 and "name: " in denied.err_text and "dynamic loader" in denied.err_text

    out = _cli(["secrets", "delete", "HF_TOKEN", *auth])
    assert out.exit_code == 0 and out.out_text.strip() == "deleted secret HF_TOKEN", out.err_text
    gone = _cli(["secrets", "delete", "HF_TOKEN", *auth])
    assert gone.exit_code == 1 and "404 not_found" in gone.err_text
    for result in (out, listed, empty, denied, gone):
        assert VALUE not in result.out_text + result.err_text and VALUE2 not in result.out_text + result.err_text

    sdk = ArgusClient("http://testserver", user.token, transport=transport)
    assert sdk.set_secret("SDK_KEY", VALUE)["name"] == "SDK_KEY"
    assert [s["name"] for s in sdk.secrets()["secrets"]] == ["SDK_KEY", "WANDB_API_KEY"]
    assert sdk.delete_secret("SDK_KEY") == {"name": "SDK_KEY", "deleted": True}
    with pytest.raises(ArgusAPIError) as err:
        sdk.delete_secret("SDK_KEY")
    assert err.value.status == 404
    with pytest.raises(ValueError):
        sdk.set_secret("", VALUE)
