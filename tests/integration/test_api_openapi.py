"""The API's documented shapes, over a real database (SQLite, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set).

`/openapi.json` declares an answer schema for every route under `/api/v2` and `/healthz` (a
`200`/`201` content schema that is not empty), a request schema for every JSON body, and no
`422` (a request that fails validation is a 400 here). The routes answer plain dicts without
validating them against those models at run time, so here the real answers of every route are
checked against their declared model, key for key: a view that gains or loses a key, or changes
a type, fails this test rather than drifting from the documentation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import Backend, World, backend, fake_ray_world, sandbox
from cryptography.fernet import Fernet
from pydantic import BaseModel

from argus.client.sdk_code import code_archive
from argus.domain.code_manifest import scan
from argus.service.api_models import (
    AttemptList,
    ErrorBody,
    Health,
    IssuedToken,
    Me,
    PriorityAnswer,
    Queue,
    TaskAccepted,
    TaskDetail,
    TaskList,
    TaskStateAnswer,
    UserBody,
    UserList,
    UserStateAnswer,
)
from argus.service.api_models_code import CodeDeleted, CodeList, CodePushAnswer, CodeSnapshotBody
from argus.service.api_models_nodes import NodeDetail, NodeList
from argus.service.api_models_secrets import SecretBody, SecretDeleted, SecretList
from argus.service.api_models_usage import UsageReport
from argus.service.routes.metrics import RayTargets
from argus.testing.fakes import FakeSnapshots
from argus.testing.sandbox import Sandbox

# The JSON bodies the API takes: (method, path) -> the keys their schema documents.
JSON_BODIES = {
    ("post", "/api/v2/users"): {"user_id"},
    ("post", "/api/v2/tasks/{task_id}:priority"): {"priority"},
    ("post", "/api/v2/tasks/{task_id}:resubmit"): {"time_limit", "priority"},
    ("post", "/api/v2/nodes"): {"name", "host", "port", "user", "key", "labels", "gpus", "cpus"},
    ("post", "/api/v2/nodes/{node_id}:drain"): {"reason"},
    ("post", "/api/v2/nodes/{node_id}:offline"): {"reason"},
    ("put", "/api/v2/secrets/{name}"): {"value"},
}
SECRETS_ENV, KEY = "ARGUS_SECRETS_KEY", Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    """An app whose scheduler runs one pass at a time over faked Ray jobs (so tasks get attempts)."""
    yield from fake_ray_world(
        sandbox, backend, FakeSnapshots({"w1": 4, "w2": 4}, labels={"w1": {"pool": "h20"}}), {SECRETS_ENV: KEY}
    )


@pytest.fixture(scope="module")
def spec(world) -> dict[str, Any]:
    r = world.client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in spec["paths"].items()
        if path.startswith("/api/v2/") or path == "/healthz"
        for method, op in ops.items()
    ]


def test_every_route_declares_its_answer_schema(spec):
    operations = _operations(spec)
    assert len(operations) >= 20, [f"{m} {p}" for m, p, _ in operations]
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        ok = [op["responses"][s] for s in ("200", "201") if s in op["responses"]]
        assert ok, where
        content = ok[0].get("content") or {}
        assert content, where
        for media, entry in content.items():
            schema = _resolve(spec, entry.get("schema") or {})
            if media == "application/json":
                if schema.get("type") == "array":  # a list answer (Prometheus's service discovery)
                    schema = _resolve(spec, schema["items"])
                branches = [_resolve(spec, s) for s in schema.get("anyOf", [schema])]
                assert all(b.get("properties") for b in branches), (where, schema)
            else:
                assert media == "text/plain" and schema.get("type") == "string", (where, media, schema)
        assert "422" not in op["responses"], where  # validation errors are 400s, documented as such
        assert _resolve(spec, op["responses"]["4XX"]["content"]["application/json"]["schema"])["title"] == "ErrorBody"


def test_every_json_body_declares_its_schema(spec):
    with_body = {(m, p): op["requestBody"] for m, p, op in _operations(spec) if "requestBody" in op}
    assert set(with_body) == {*JSON_BODIES, ("post", "/api/v2/tasks"), ("post", "/api/v2/code")}
    for key, keys in JSON_BODIES.items():
        schema = _resolve(spec, with_body[key]["content"]["application/json"]["schema"])
        assert set(schema["properties"]) == keys, key
        assert schema.get("additionalProperties") is False, key
    assert with_body[("post", "/api/v2/users")]["required"] is True
    assert with_body[("post", "/api/v2/nodes/{node_id}:drain")]["required"] is False
    yaml = with_body[("post", "/api/v2/tasks")]
    assert yaml["required"] is True and set(yaml["content"]) == {"application/yaml"}
    archive = with_body[("post", "/api/v2/code")]
    assert archive["required"] is True and set(archive["content"]) == {"application/gzip"}
    push = spec["paths"]["/api/v2/code"]["post"]
    assert {p["name"] for p in push["parameters"]} == {"name"} and "413" in push["responses"]


def conforms(model: type[BaseModel], response, status: int = 200) -> dict[str, Any]:
    """The answer is exactly `model`'s shape: no key more or less, every value of its type."""
    assert response.status_code == status, response.text
    body = response.json()
    assert model.model_validate(body).model_dump(mode="json") == body, (model.__name__, body)
    return body


def test_every_answer_matches_its_model(world):
    admin = world.admin
    uid = world.unique_id("shape")
    conforms(UserBody, world.post(admin, "/api/v2/users", json={"user_id": uid}), 201)
    token = conforms(IssuedToken, world.post(admin, f"/api/v2/users/{uid}/tokens"), 201)["token"]
    conforms(UserList, world.get(admin, "/api/v2/users"))
    user = world.new_user("shape_u")
    conforms(Me, world.get(user, "/api/v2/me"))
    assert token

    running = world.submit(user, world.spec(n_gpus_per_node=2))
    world.tick()
    world.jobs.run(f"{running}--a01")
    world.tick()
    waiting = world.submit(user, world.spec(nnodes=2, n_gpus_per_node=4))  # does not fit while `running` runs
    world.tick()
    accepted = conforms(TaskAccepted, world.post_yaml(user, world.spec(env_vars={"MY_TOKEN": "t"})), 201)
    assert accepted["warnings"] and "env_vars.MY_TOKEN" in accepted["warnings"][0]

    detail = conforms(TaskDetail, world.get(user, f"/api/v2/tasks/{running}"))
    assert detail["state"] == "RUNNING" and detail["latest_attempt"] is not None
    conforms(TaskDetail, world.get(user, f"/api/v2/tasks/{waiting}"))
    listed = conforms(TaskList, world.get(user, "/api/v2/tasks", params={"limit": 2}))
    assert listed["next_cursor"] is not None
    attempts = conforms(AttemptList, world.get(user, f"/api/v2/tasks/{running}/attempts"))
    assert attempts["attempts"]
    queue = conforms(Queue, world.get(admin, "/api/v2/queue"))
    assert queue["pending"] and queue["running"] and queue["pools"]
    conforms(PriorityAnswer, world.post(admin, f"/api/v2/tasks/{waiting}:priority", json={"priority": 700}))
    conforms(Health, world.client.get("/healthz"))
    mine = conforms(UsageReport, world.get(user, "/api/v2/usage", params={"group_by": "task"}))
    assert [r["key"] for r in mine["rows"]] == [running] and mine["rows"][0]["gpu_seconds"] > 0
    conforms(UsageReport, world.get(admin, "/api/v2/usage", params={"group_by": "day", "user": user.user_id}))

    conforms(SecretBody, world.client.put("/api/v2/secrets/HF_TOKEN", json={"value": "v"}, headers=user.headers), 201)
    conforms(SecretList, world.get(user, "/api/v2/secrets"))
    conforms(SecretDeleted, world.client.delete("/api/v2/secrets/HF_TOKEN", headers=user.headers))
    archive = code_archive(str(world.sandbox.code["sim-a"]), scan(str(world.sandbox.code["sim-a"])).entries)
    headers = {**user.headers, "Content-Type": "application/gzip"}
    push = world.client.post("/api/v2/code", params={"name": "shape"}, content=archive, headers=headers)
    pushed = conforms(CodePushAnswer, push, 201)
    touch = world.post(user, f"/api/v2/code/{pushed['sha256']}:touch", params={"name": "shape2"})
    assert conforms(CodePushAnswer, touch)["bytes_uploaded"] == 0
    conforms(CodeList, world.get(user, "/api/v2/code"))
    conforms(CodeSnapshotBody, world.get(user, f"/api/v2/code/{pushed['sha256']}"))
    conforms(CodeDeleted, world.client.delete(f"/api/v2/code/{pushed['sha256']}", headers=user.headers))

    targets = conforms(RayTargets, world.get(admin, "/api/v2/monitoring/ray-targets"))
    assert targets and all(t["targets"] for t in targets)
    nodes = conforms(NodeList, world.get(user, "/api/v2/nodes"))
    assert nodes["nodes"] and nodes["pools"]
    conforms(NodeDetail, world.get(admin, f"/api/v2/nodes/{nodes['nodes'][0]['id']}"))

    for tid in (running, waiting):
        conforms(TaskStateAnswer, world.post(user, f"/api/v2/tasks/{tid}:cancel"))
    conforms(UserStateAnswer, world.post(admin, f"/api/v2/users/{uid}:disable"))
    conforms(UserStateAnswer, world.post(admin, f"/api/v2/users/{uid}:enable"))
    conforms(ErrorBody, world.post(admin, "/api/v2/users", json={"user_id": "Bad"}), 400)
