"""The pure parts of the local cluster: node layout, ports, the head's `ray start` and the
workers' `argus node-agent` command lines, GPU slices, temp dirs."""

from __future__ import annotations

import ipaddress

import pytest

from argus.cluster.errors import ClusterError, PortInUse
from argus.cluster.head import HeadRecord, head_start_args, temp_dir_for
from argus.cluster.local import (
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_GCS_PORT,
    ClusterState,
    agent_args,
    gpu_slices,
    loopback_prefix,
    plan_cluster,
    ray_temp_dir,
)
from argus.cluster.procs import (
    NODE_PORT_KEYS,
    PORT_BASE,
    PORT_SLOT,
    WORKER_PORTS_PER_NODE,
    PortFinder,
    default_port_start,
    node_ports,
)

SHARED = "/srv/shared"


def all_free(port: int) -> bool:
    return True


def taken(*ports: int):
    busy = set(ports)
    return lambda port: port not in busy


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times"
    return args[args.index(name) + 1]


# -- plan_cluster -------------------------------------------------------------------------------
def test_head_has_no_resources_and_workers_do():
    state = plan_cluster(SHARED, workers=3, gpus_per_worker=4, cpus_per_worker=8, is_free=all_free)
    assert [n.name for n in state.nodes] == ["head", "worker-1", "worker-2", "worker-3"]
    head, *workers = state.nodes
    assert head is state.head and head.is_head
    assert (head.cpus, head.gpus) == (0, 0)
    assert all(not w.is_head and (w.cpus, w.gpus) == (8, 4) for w in workers)
    assert (state.workers, state.gpus_per_worker, state.cpus_per_worker) == (3, 4, 8)


@pytest.mark.parametrize(
    "is_free",
    [
        all_free,
        taken(20000, 20003, 20050, 20150, 20201, 20420),
        lambda p: not (20000 <= p < 20300 and p % 7 == 0),
    ],
    ids=["all-free", "some-taken", "every-7th-taken-at-the-start"],
)
def test_each_node_finds_distinct_free_ports_in_its_own_region(is_free):
    state = plan_cluster(SHARED, workers=4, gpus_per_worker=1, cpus_per_worker=2, is_free=is_free)
    starts = [n.port_start for n in state.nodes]
    assert starts == [default_port_start(n.ip) for n in state.nodes]
    assert all(b - a == PORT_SLOT for a, b in zip(starts, starts[1:]))  # 127.0.X.k: neighbours
    seen: dict[int, str] = {state.gcs_port: "gcs", state.dashboard_port: "dashboard"}
    for node in state.nodes:  # what each node finds at its (re)join, each in its own region
        finder = PortFinder(node.port_start, {state.gcs_port, state.dashboard_port}, is_free)
        ports, lo, hi = node_ports(finder)
        assert set(ports) == set(NODE_PORT_KEYS) and hi - lo + 1 == WORKER_PORTS_PER_NODE
        for port in {*ports.values(), *range(lo, hi + 1)}:
            assert port not in seen, f"{node.name} reuses port {port} of {seen.get(port)}"
            assert is_free(port), f"{node.name} got taken port {port}"
            seen[port] = node.name


def test_port_regions_stay_below_the_ephemeral_range():
    for ip in ("127.0.2.1", "127.0.251.33", "10.1.2.3"):
        assert PORT_BASE <= default_port_start(ip) <= 32768 - PORT_SLOT
    assert default_port_start(None) == default_port_start("not-an-ip") == PORT_BASE


def test_node_ips_are_distinct_loopback_addresses():
    state = plan_cluster(SHARED, 5, 1, 1, gcs_port=6379, is_free=all_free)
    ips = [n.ip for n in state.nodes]
    assert len(set(ips)) == len(ips) == 6
    prefix = loopback_prefix(6379)
    assert prefix == "127.0.131."
    assert ips == [f"{prefix}{k}" for k in range(1, 7)]
    assert all(ipaddress.ip_address(ip).is_loopback for ip in ips)
    assert state.dashboard_url == "http://127.0.131.1:8265"
    assert state.gcs_address == "127.0.131.1:6379"


def test_loopback_prefix_differs_for_neighbouring_gcs_ports():
    assert loopback_prefix(6379) != loopback_prefix(6380)
    for port in (1, 6379, 65535):
        third = int(loopback_prefix(port).split(".")[2])
        assert 2 <= third <= 251


def test_default_ports_avoid_redis():
    assert DEFAULT_GCS_PORT != 6379  # Redis's port
    state = plan_cluster(SHARED, 1, 1, 1, is_free=all_free)
    assert (state.gcs_port, state.dashboard_port) == (DEFAULT_GCS_PORT, DEFAULT_DASHBOARD_PORT)


@pytest.mark.parametrize(
    "port, flag_name",
    [(DEFAULT_GCS_PORT, "--port"), (DEFAULT_DASHBOARD_PORT, "--dashboard-port")],
)
def test_taken_gcs_or_dashboard_port_raises_port_in_use(port, flag_name):
    with pytest.raises(PortInUse) as info:
        plan_cluster(SHARED, 2, 1, 1, is_free=taken(port))
    text = str(info.value)
    assert f"port {port}" in text
    assert flag_name in text
    assert "already in use" in text
    assert isinstance(info.value, ClusterError)


def test_taken_custom_dashboard_port_is_named():
    with pytest.raises(PortInUse, match=r"port 9000 \(Ray dashboard\).*--dashboard-port"):
        plan_cluster(SHARED, 1, 1, 1, dashboard_port=9000, is_free=taken(9000))


def test_gpu_slices_are_assigned_to_workers_only():
    state = plan_cluster(SHARED, 2, 2, 1, is_free=all_free, gpu_slices=["0,1", "2,3"])
    assert [n.cuda_visible_devices for n in state.nodes] == [None, "0,1", "2,3"]
    logical = plan_cluster(SHARED, 2, 2, 1, is_free=all_free)
    assert [n.cuda_visible_devices for n in logical.nodes] == [None, None, None]


def test_state_json_round_trip():
    state = plan_cluster(SHARED, 2, 4, 4, is_free=all_free)
    state.nodes[1].pid = 1234
    state.nodes[0].pid = 99
    again = ClusterState.from_json(state.to_json())
    assert again == state
    assert again.nodes[1].pid == 1234


# -- PortFinder ---------------------------------------------------------------------------------
def test_port_finder_never_repeats_and_skips_taken():
    finder = PortFinder(100, {101}, taken(103))
    assert [finder.one() for _ in range(3)] == [100, 102, 104]


def test_port_finder_block_is_consecutive_and_free():
    finder = PortFinder(100, {105}, taken(112))
    assert finder.block(5) == (100, 104)
    assert finder.one() == 106  # 105 was taken before
    assert finder.block(5) == (107, 111)
    assert finder.block(3) == (113, 115)  # 112 is busy
    assert finder.taken >= set(range(100, 105)) | set(range(107, 112)) | set(range(113, 116))


def test_port_finder_block_skips_ranges_with_a_taken_port():
    finder = PortFinder(100, {103}, all_free)
    assert finder.block(5) == (104, 108)
    assert finder.one() == 109
    finder2 = PortFinder(200, set(), taken(202))
    assert finder2.block(3) == (203, 205)


def test_port_finder_gives_up_above_65000():
    finder = PortFinder(64999, set(), lambda p: p < 64999)
    with pytest.raises(ClusterError, match="no free port left below 65000"):
        finder.one()


# -- command lines ------------------------------------------------------------------------------
def test_workers_are_node_agents_that_find_the_head_through_head_json():
    state = plan_cluster(SHARED, 2, 4, 8, gcs_port=6379, dashboard_port=8265, drivers_per_worker=100, is_free=all_free)
    worker = state.nodes[1]
    args = agent_args(state, worker)
    assert args[0] == "node-agent"
    assert "--address" not in args and "6379" not in args  # no head address: head.json says it
    assert flag(args, "--shared-root") == SHARED and flag(args, "--cluster") == "local"
    assert flag(args, "--name") == "worker-1" and flag(args, "--node-ip") == worker.ip
    assert flag(args, "--gpus") == "4" and flag(args, "--cpus") == "8"
    assert flag(args, "--drivers") == "100"
    assert flag(args, "--port-start") == str(worker.port_start)
    # Every node shares the head's temp dir, so agents find the drivers' logs.
    assert flag(args, "--temp-dir") == state.temp_dir == temp_dir_for(SHARED, "local")


def test_drivers_per_worker_sets_worker_node_resource():
    state = plan_cluster(SHARED, 1, 1, 1, drivers_per_worker=7, is_free=all_free)
    assert flag(agent_args(state, state.nodes[1]), "--drivers") == "7"


def test_the_head_has_no_cpus_or_gpus_and_serves_the_dashboard_on_its_ip():
    rec = HeadRecord(
        SHARED,
        "local",
        "127.0.131.1",
        6379,
        8265,
        "/tmp/argus-ray-x",
        30.0,
        5.0,
        {"node_manager_port": 20004, "ray_client_server_port": 20006},
        20007,
        20106,
    )
    args = head_start_args(rec)
    assert args[:3] == ["start", "--head", "--block"]
    assert flag(args, "--port") == "6379" and flag(args, "--dashboard-port") == "8265"
    assert flag(args, "--dashboard-host") == flag(args, "--node-ip-address") == "127.0.131.1"
    assert flag(args, "--num-cpus") == "0" and flag(args, "--num-gpus") == "0"
    assert flag(args, "--temp-dir") == "/tmp/argus-ray-x"
    assert flag(args, "--node-manager-port") == "20004" and flag(args, "--ray-client-server-port") == "20006"
    assert flag(args, "--min-worker-port") == "20007" and flag(args, "--max-worker-port") == "20106"
    assert "--resources" not in args and "--address" not in args
    assert rec.dashboard_url == "http://127.0.131.1:8265" and rec.address == "127.0.131.1:6379"
    info = rec.info(123.0)
    assert (info.address, info.temp_dir, info.stopped, info.updated_at) == (
        rec.address,
        rec.temp_dir,
        False,
        123.0,
    )


# -- GPUs and temp dir --------------------------------------------------------------------------
def test_gpu_slices_split_real_gpus():
    assert gpu_slices(2, 4, 8) == ["0,1,2,3", "4,5,6,7"]
    assert gpu_slices(3, 1, 4) == ["0", "1", "2"]
    assert gpu_slices(2, 4, 0) is None


def test_gpu_slices_too_few_gpus():
    with pytest.raises(ClusterError) as info:
        gpu_slices(2, 4, 6)
    assert str(info.value) == "2 workers x 4 GPUs need 8 GPUs; this machine has 6"


def test_ray_temp_dir_is_short_and_unique_per_root_and_cluster_not_per_port(tmp_path):
    long_root = tmp_path / ("very-long-directory-name-" * 6)
    a = temp_dir_for(str(long_root), "local")
    assert len(a) < 30
    assert a.startswith("/tmp/argus-ray-")
    assert a == ray_temp_dir(str(long_root))
    assert a != temp_dir_for(str(long_root), "prod")
    assert a != temp_dir_for(str(tmp_path), "local")
    state = plan_cluster(str(long_root), 1, 1, 1, gcs_port=6379, is_free=all_free)
    again = plan_cluster(str(long_root), 1, 1, 1, gcs_port=6400, is_free=all_free)
    assert state.temp_dir == again.temp_dir == a  # a head started again on another port keeps it
