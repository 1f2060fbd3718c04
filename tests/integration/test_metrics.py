"""`GET /metrics` and the Ray targets for Prometheus, over a real database (SQLite, and PostgreSQL
when `ARGUS_TEST_DATABASE_URL` is set), with faked Ray jobs and a fake cluster.

Only the admin token and the metrics token read them; every family of the contract is there
from the first scrape, zeros included; the figures follow tasks as they are submitted, run, end
and are retried; no task id, token or secret value is ever in the text, and the API's request
series are labelled by route templates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from api_support import ADMIN_TOKEN, Backend, World, backend, fake_ray_world, sandbox
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from argus.testing.fakes import FakeSnapshots
from argus.testing.sandbox import Sandbox

METRICS_TOKEN = "metrics-5d1c0e7b-TOKEN-93aa"
SECRET_VALUE = "hf-8a7c6e5d-SECRET-VALUE-0f1e"
KEY = Fernet.generate_key().decode()
FAMILIES = {
    "argus_tasks": "gauge",
    "argus_pending_tasks": "gauge",
    "argus_pending_min_gpus": "gauge",
    "argus_pending_fits_now": "gauge",
    "argus_gpus": "gauge",
    "argus_nodes": "gauge",
    "argus_node_up": "gauge",
    "argus_node_gpus": "gauge",
    "argus_node_gpus_allocated": "gauge",
    "argus_user_gpus_allocated": "gauge",
    "argus_user_tasks": "gauge",
    "argus_user_gpu_seconds": "counter",
    "argus_task_wait_seconds": "histogram",
    "argus_task_run_seconds": "histogram",
    "argus_task_ends": "counter",
    "argus_scheduler_pass_seconds": "histogram",
    "argus_scheduler_admissions": "counter",
    "argus_api_requests": "counter",
    "argus_api_request_seconds": "histogram",
    "argus_ray_up": "gauge",
    "argus_head_record_age_seconds": "gauge",
}
CLUSTER = FakeSnapshots(
    {"w1": 4, "w2": 4, "w3": 8},
    labels={"w1": {"pool": "h20", "argus.io/node": "gpu-a"}, "w2": {"pool": "h20"}, "w3": {}},
)


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    env = {"ARGUS_METRICS_TOKEN": METRICS_TOKEN, "ARGUS_SECRETS_KEY": KEY}
    yield from fake_ray_world(sandbox, backend, CLUSTER, env)


def scrape(world: World, token: str = METRICS_TOKEN) -> tuple[str, dict[tuple[str, tuple], float], dict[str, str]]:
    """The text, every sample by (name, sorted labels), and every family's type."""
    r = world.client.get(
        "/metrics", headers={"Authorization": f"Bearer {token}", "Accept": "application/openmetrics-text"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    samples, types = {}, {}
    for fam in text_string_to_metric_families(r.text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return r.text, samples, types


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def matching(samples: dict, name: str, **labels: str) -> dict[tuple, float]:
    return {k[1]: v for k, v in samples.items() if k[0] == name and set(labels.items()) <= set(k[1])}


def test_only_the_admin_and_the_metrics_token_read_metrics_and_targets(world):
    user = world.new_user("mx")
    for path in ("/metrics", "/api/v2/monitoring/ray-targets"):
        none = world.client.get(path)
        assert none.status_code == 401 and "Authorization" in none.json()["message"], none.text
        bad = world.client.get(path, headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401, bad.text
        refused = world.get(user, path)
        assert refused.status_code == 403, refused.text
        assert "argus_" not in refused.text and "targets" not in refused.text
        assert world.get(world.admin, path).status_code == 200
        assert world.client.get(path, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
    # The metrics token reads nothing else.
    other = world.client.get("/api/v2/tasks", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert other.status_code == 401, other.text
    plain = world.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert plain.headers["content-type"].startswith("text/plain") and "argus_tasks" in plain.text


def test_every_family_is_there_with_zeros_and_the_cluster(world):
    text, samples, types = scrape(world)
    assert {name: types.get(name) for name in FAMILIES} == FAMILIES
    assert value(samples, "argus_ray_up") == 1
    assert value(samples, "argus_head_record_age_seconds") == -1  # no head published here
    for state in ("QUEUED", "PENDING_RESOURCES", "SUBMITTED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"):
        assert ("argus_tasks", (("state", state),)) in samples
    for reason in ("Resources", "Priority", "QuotaUser", "MaxRunning", "BeginTime", "None"):
        assert ("argus_pending_tasks", (("pool", "h20"), ("reason", reason))) in samples
    assert value(samples, "argus_pending_min_gpus", pool="h20") == 0
    assert (
        value(samples, "argus_gpus", pool="h20", state="free")
        + value(samples, "argus_gpus", pool="h20", state="allocated")
        == 8
    )
    assert value(samples, "argus_gpus", pool="-", state="draining") == 0
    for state in ("pending", "online", "draining", "offline", "failed", "alive", "dead"):
        assert ("argus_nodes", (("state", state),)) in samples
    assert value(samples, "argus_nodes", state="alive") == 3  # Ray-only workers: none registered
    up = matching(samples, "argus_node_up")
    assert up == {
        (("ip", "127.0.1.1"), ("node", "gpu-a"), ("pool", "h20")): 1.0,
        (("ip", "127.0.1.2"), ("node", "w2"), ("pool", "h20")): 1.0,
        (("ip", "127.0.1.3"), ("node", "w3"), ("pool", "-")): 1.0,
    }
    assert value(samples, "argus_node_gpus", node="w3", ip="127.0.1.3", pool="-", state="free") == 8
    for cause in ("none", "USER_CODE", "PLATFORM"):
        assert value(samples, "argus_task_ends_total", state="FAILED", cause=cause) >= 0
    assert ("argus_task_run_seconds_count", (("workload", "sft"),)) in samples
    assert value(samples, "argus_scheduler_admissions_total") >= 0


def test_figures_follow_tasks_and_never_show_ids_tokens_or_secrets(world):
    user = world.new_user("mx")
    put = world.client.put("/api/v2/secrets/HF_TOKEN", json={"value": SECRET_VALUE}, headers=user.headers)
    assert put.status_code == 201, put.text
    _, before, _ = scrape(world)
    admitted0 = value(before, "argus_scheduler_admissions_total")
    passes0 = value(before, "argus_scheduler_pass_seconds_count")
    ends0 = value(before, "argus_task_ends_total", state="SUCCEEDED", cause="none")
    runs0 = value(before, "argus_task_run_seconds_count", workload="ppo")
    waits0 = value(before, "argus_task_wait_seconds_count", pool="h20")

    first = world.submit(user, world.spec(n_gpus_per_node=2, pool="h20", secrets=["HF_TOKEN"]))
    world.clock.advance(30)
    world.tick()  # admitted after 31 s (the tick advances one more)
    world.jobs.run(f"{first}--a01")
    world.tick()
    big = world.submit(user, world.spec(nnodes=2, n_gpus_per_node=4, pool="h20"))  # cannot fit beside `first`
    world.tick()
    _, mid, _ = scrape(world)
    assert value(mid, "argus_tasks", state="RUNNING") >= 1
    assert value(mid, "argus_pending_tasks", pool="h20", reason="Resources") == 1
    assert value(mid, "argus_pending_min_gpus", pool="h20") == 8
    assert value(mid, "argus_user_gpus_allocated", user=user.user_id, pool="h20") == 2
    assert value(mid, "argus_user_tasks", user=user.user_id, state="RUNNING") == 1
    assert value(mid, "argus_user_tasks", user=user.user_id, state="PENDING_RESOURCES") == 1
    on_nodes = matching(mid, "argus_node_gpus_allocated", user=user.user_id)
    assert sum(on_nodes.values()) == 2 and all(dict(k)["pool"] == "h20" and dict(k)["ip"] for k in on_nodes)
    assert value(mid, "argus_scheduler_admissions_total") == admitted0 + 1
    assert value(mid, "argus_scheduler_pass_seconds_count") == passes0 + 3
    assert value(mid, "argus_task_wait_seconds_count", pool="h20") == waits0 + 1
    assert value(mid, "argus_task_wait_seconds_bucket", pool="h20", le="60.0") >= 1

    world.clock.advance(100)
    world.jobs.finish(f"{first}--a01")
    world.tick()  # first ends; big is admitted in the same pass
    assert world.client.post(f"/api/v2/tasks/{big}:cancel", headers=user.headers).status_code == 200
    world.tick()
    text, after, _ = scrape(world)
    assert value(after, "argus_task_ends_total", state="SUCCEEDED", cause="none") == ends0 + 1
    assert value(after, "argus_task_ends_total", state="CANCELED", cause="none") >= 1
    assert value(after, "argus_task_run_seconds_count", workload="ppo") == runs0 + 2
    assert value(after, "argus_task_run_seconds_bucket", workload="ppo", le="300.0") >= runs0 + 1
    assert value(after, "argus_user_gpus_allocated", user=user.user_id, pool="h20") == 0
    assert value(after, "argus_user_tasks", user=user.user_id, state="RUNNING") == 0
    seconds = value(after, "argus_user_gpu_seconds_total", user=user.user_id, pool="h20")
    assert seconds >= 2 * 100, seconds

    for secret in (first, big, SECRET_VALUE, user.token, METRICS_TOKEN, ADMIN_TOKEN, KEY, "--a01"):
        assert secret not in text
    routes = {dict(k)["route"] for k in matching(after, "argus_api_requests_total")}
    assert {"/api/v2/tasks", "/api/v2/tasks/{task_id}:cancel", "/metrics", "/api/v2/secrets/{name}"} <= routes
    assert all(r.startswith("/") or r == "other" for r in routes), routes
    world.client.get("/no/such/path")
    _, last, _ = scrape(world)
    assert value(last, "argus_api_requests_total", route="other", method="GET", code="404") >= 1


def test_a_scrape_while_ray_is_down_is_quick_and_says_so(world):
    CLUSTER.down = True
    try:
        t0 = time.monotonic()
        _, samples, types = scrape(world)
        assert time.monotonic() - t0 < 3
        assert value(samples, "argus_ray_up") == 0
        assert not matching(samples, "argus_node_up") and not matching(samples, "argus_gpus")
        assert set(FAMILIES) <= set(types)
        down = world.get(world.admin, "/api/v2/monitoring/ray-targets")
        assert down.status_code == 503 and "Ray cannot be read" in down.json()["message"]
    finally:
        CLUSTER.down = False


def test_ray_targets_list_every_alive_node_for_http_sd(world):
    r = world.client.get("/api/v2/monitoring/ray-targets", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json() == [
        {
            "targets": ["127.0.0.1:9100"],
            "labels": {"node": "head", "pool": "-", "ray_node_id": "head", "ray_head": "true"},
        },
        {
            "targets": ["127.0.1.1:9101"],
            "labels": {"node": "gpu-a", "pool": "h20", "ray_node_id": "w1", "ray_head": "false"},
        },
        {
            "targets": ["127.0.1.2:9102"],
            "labels": {"node": "w2", "pool": "h20", "ray_node_id": "w2", "ray_head": "false"},
        },
        {
            "targets": ["127.0.1.3:9103"],
            "labels": {"node": "w3", "pool": "-", "ray_node_id": "w3", "ray_head": "false"},
        },
    ]


def test_a_pool_no_node_carries_is_labelled_other_and_never_becomes_a_series(world):
    user = world.new_user("mp")
    pools = [f"made-up-{i}" for i in range(3)]
    tids = [world.submit(user, world.spec(n_gpus_per_node=1, pool=p)) for p in pools]
    world.tick()
    text, samples, _ = scrape(world)
    assert value(samples, "argus_pending_tasks", pool="other", reason="Resources") >= 3
    assert not any(p in text for p in pools)
    for tid in tids:
        assert world.client.post(f"/api/v2/tasks/{tid}:cancel", headers=user.headers).status_code == 200
    world.tick()
    text, _, _ = scrape(world)
    assert not any(p in text for p in pools)


def test_the_gpu_seconds_counter_never_goes_back_when_an_end_is_stamped_before_a_scrape(world):
    user = world.new_user("mc")
    tid = world.submit(user, world.spec(n_gpus_per_node=2, pool="h20"))
    world.tick()
    world.jobs.run(f"{tid}--a01")
    world.tick()
    world.clock.advance(50)
    _, ahead, _ = scrape(world)  # counts the running attempt up to the scrape's clock
    seen = value(ahead, "argus_user_gpu_seconds_total", user=user.user_id, pool="h20")
    assert seen >= 2 * 50
    world.clock.advance(-20)  # the pass that ends it read its clock before that scrape
    world.jobs.finish(f"{tid}--a01")
    world.tick()
    world.clock.advance(40)
    _, after, _ = scrape(world)
    assert value(after, "argus_user_gpu_seconds_total", user=user.user_id, pool="h20") == seen


def test_tasks_waiting_for_resources_that_fit_the_free_gpus_now_are_counted(world):
    user = world.new_user("mf")
    CLUSTER.free = {"w1": 0, "w2": 0}  # something outside Argus holds the pool's GPUs
    try:
        fits = world.submit(user, world.spec(n_gpus_per_node=4, pool="h20"))
        never = world.submit(user, world.spec(n_gpus_per_node=8, pool="h20"))  # no h20 node has 8 GPUs
        world.tick()
        _, held, _ = scrape(world)
        assert value(held, "argus_pending_tasks", pool="h20", reason="Resources") >= 2
        assert value(held, "argus_pending_fits_now", pool="h20") == 0
        CLUSTER.free = None  # the GPUs are free again; no pass has run since
        _, freed, _ = scrape(world)
        assert value(freed, "argus_pending_fits_now", pool="h20") == 1  # `fits`, not the 1x8 gang
        assert value(freed, "argus_pending_fits_now", pool="-") == 0
        world.tick()  # the pass starts it: nothing fits and waits any more
        _, after, _ = scrape(world)
        assert value(after, "argus_pending_fits_now", pool="h20") == 0
        assert world.get(user, f"/api/v2/tasks/{fits}").json()["state"] in ("SUBMITTED", "RUNNING")
    finally:
        CLUSTER.free = None
        for tid in (fits, never):
            world.client.post(f"/api/v2/tasks/{tid}:cancel", headers=user.headers)
        world.tick()
