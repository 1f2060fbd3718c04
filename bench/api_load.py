"""Control-plane benchmark: submissions and reads under load, acceptance -> submit_job, fairness.

Starts its own local Ray cluster (2 workers x 4 GPUs) and an `argus server` process (scheduler
on) over a fresh database, then:

1. acceptance -> submission (first, on an empty queue): submits small tasks one at a time while
   the GPUs are free and reads, per task, the time from acceptance (`created_at`) to the attempt
   row (`attempts[].created_at`, written just before `submit_job`) and to Ray's acceptance
   (`submitted_at`);
2. load: SUBMITTERS clients post TaskSpec YAML and READERS clients loop over `GET /healthz`,
   `GET /api/v2/tasks` and `GET /api/v2/tasks/<id>` for DURATION seconds, each client with one
   keep-alive connection and one request in flight, spread over USERS users. It prints p50/p99/max
   per kind, the 429s of the per-user rate limit apart from errors, and the size of SQLite's
   write-ahead log (largest seen and at the end). The submitted tasks ask for more GPUs than any
   node has, so the scheduler parks each one in PENDING_RESOURCES, as in production;
3. flood (`--flood-seconds`, 0 skips it): one user posts specs whose overrides were never seen
   (each an uncached verl check) from FLOOD_CLIENTS clients while another user submits one
   uncached spec at a time; it prints the other user's latency next to the same submit without
   the flood;
4. accept (`--accept-seconds`, 0 skips it): ACCEPT_CLIENTS clients post TaskSpec YAML for
   ACCEPT_SECONDS against a bare FastAPI endpoint answering 201 (`bench/bare_server.py`, served
   like `argus server`) and as long against Argus, from the same load generator on the same
   machine, the two alternating in `--accept-rounds` rounds (4: bare 5 s, Argus 5 s, four times),
   so that a change in the machine's speed during the phase reaches both sides alike (before each
   bare round it waits, up to 5 s, for Argus's processes to go quiet); it prints
   both throughputs, their ratio (and each round's) and Argus's p99 (targets: >= 0.25 x bare,
   p99 < 100 ms), and each server's CPU time per answered request (from /proc: all its threads,
   user + system) with the cores 0.25 x bare would take at Argus's cost, and how busy the
   machine's cores were meanwhile and by whom (API, scheduler, load generator, the rest). Its
   target is measured alone, on a fresh database (`--samples 0 --duration 0 --flood-seconds 0`); after the other
   phases their tasks still wait (it says how many).
   `--profile FILE` records the Argus server with py-spy meanwhile (GIL-holding samples,
   collapsed stacks), `--profile-scheduler FILE` its scheduler process.

The per-user submission rate is off unless `--rate-per-user` sets it; `--set SECTION.KEY=VALUE`
sets any other server setting (e.g. `scheduler.enabled=false`). The server runs its scheduler
in a child process, as shipped (`scheduler.own_process`), whose CPU is printed apart;
`--set scheduler.own_process=false` measures the scheduler as a thread of the server instead.
`--api-processes N` runs the server with `service.api_processes: N` (N processes, a socket
each on the one address); the API CPU printed is theirs summed.

Usage:
    python bench/api_load.py --db sqlite
    python bench/api_load.py --db sqlite --samples 0 --duration 0 --flood-seconds 0   # accept only
    python bench/api_load.py --db postgres --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import yaml

from argus.client.sdk import ArgusClient
from argus.cluster import local
from argus.testing.sandbox import prepare, task_yaml

ADMIN = "bench-admin-" + secrets.token_hex(8)
_unique = itertools.count(1000)


def free_port(start: int) -> int:
    while not local.port_free(start):
        start += 1
    return start


def start_server(
    cluster: local.ClusterState,
    workdir: Path,
    db_url: str,
    port: int,
    rate: float | None,
    extra: list[str],
    name: str = "server",
) -> subprocess.Popen:
    """`argus server` on `port` over `db_url` (its config and log `<name>.yaml`, `<name>.log` in
    `workdir`), once it answers `/healthz`."""
    ray = yaml.safe_load(local.config_file(cluster.shared_root).read_text())
    config = workdir / f"{name}.yaml"
    settings: dict = {
        "ray": ray,
        "service": {"port": port, "db_url": db_url, "submit_rate_per_s": rate},
        "scheduler": {"retry_interval_s": 30},
    }
    for item in extra:  # --set section.key=value
        path, value = item.split("=", 1)
        section, key = path.split(".", 1)
        settings.setdefault(section, {})[key] = yaml.safe_load(value)
    config.write_text(yaml.safe_dump(settings))
    log = open(workdir / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "argus.client.cli", "server", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MVP_INTERNAL_TOKEN": ADMIN},
    )
    admin = ArgusClient(f"http://127.0.0.1:{port}", ADMIN, timeout=5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            admin.health()
            return proc
        except Exception:
            if proc.poll() is not None:
                raise SystemExit((workdir / f"{name}.log").read_text()[-3000:]) from None
            time.sleep(0.2)
    raise SystemExit("server did not start")


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def accept_to_submit(client: ArgusClient, sandbox, samples: int) -> None:
    spec = task_yaml(
        sandbox,
        "ppo",
        n_gpus_per_node=1,
        total_training_steps=1,
        save_freq=-1,
        env_vars={"VERL_SIM_STEP_SECONDS": "0"},
    )
    client.submit(spec)  # warm the verl check cache and Ray's job path once
    time.sleep(3)
    to_row, to_ray = [], []
    for _ in range(samples):
        tid = client.submit(spec)["task_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            att = client.attempts(tid)["attempts"]
            if att and att[0]["submitted_at"]:
                break
            time.sleep(0.02)
        task = client.task(tid)
        to_row.append(ts(att[0]["created_at"]) - ts(task["created_at"]))
        to_ray.append(ts(att[0]["submitted_at"]) - ts(task["created_at"]))
        client.wait(tid, timeout_s=120, poll_s=0.2)  # the GPUs are free again for the next one

    def ms(xs):
        return f"p50 {statistics.median(xs) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms"

    print(f"acceptance -> attempt written (just before submit_job): {ms(to_row)}  (n={samples})")
    print(f"acceptance -> submit_job returned:                     {ms(to_ray)}  (n={samples})")


class Tally:
    """Latencies of answered requests per kind; 429s and errors apart."""

    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.limited: dict[str, int] = defaultdict(int)
        self.errors: list[str] = []

    def merge(self, other: Tally) -> None:
        for kind, xs in other.lat.items():
            self.lat[kind].extend(xs)
        for kind, n in other.limited.items():
            self.limited[kind] += n
        self.errors.extend(other.errors)

    def report(self, kinds: list[str], elapsed: float) -> None:
        for kind in kinds:
            xs = self.lat.get(kind, [])
            if not xs:
                print(f"  {kind:<12} n 0  (none answered)  429s {self.limited[kind]}")
                continue
            print(
                f"  {kind:<12} n {len(xs):>6} ({len(xs) / elapsed:6.0f}/s)  p50 {pct(xs, 50):7.1f} ms  "
                f"p99 {pct(xs, 99):7.1f} ms  max {max(xs) * 1000:7.1f} ms  429s {self.limited[kind]}"
            )


def http_request(method: str, path: str, port: int, token: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if body:
        head += "Content-Type: application/yaml\r\n"
    return (head + "\r\n").encode() + body


async def exchange(reader, writer, request: bytes, timeout: float) -> tuple[int, bytes]:
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return int(head.split(b" ", 2)[1]), body


async def client_loop(port: int, requests, stop_at: float, tally: Tally, timeout: float = 30.0) -> None:
    """Send `requests()` -> (kind, request bytes, expected status) one at a time until `stop_at`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop_at:
            kind, request, ok = requests()
            t0 = time.perf_counter()
            try:
                status, body = await exchange(reader, writer, request, timeout)
            except TimeoutError:
                tally.errors.append(f"{kind}: no answer in {timeout:.0f} s")
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            took = time.perf_counter() - t0
            if status == ok:
                tally.lat[kind].append(took)
            elif status == 429:
                tally.limited[kind] += 1
                tally.lat[kind + " 429"].append(took)
            else:
                tally.errors.append(f"{kind}: {status} {body[:200]!r}")
    finally:
        writer.close()


def wal_size(db_path: Path | None) -> int:
    if db_path is None:
        return 0
    wal = db_path.with_name(db_path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def watch_wal(db_path: Path | None, stop_at: float, seen: list[int]) -> None:
    while time.monotonic() < stop_at:
        seen.append(wal_size(db_path))
        await asyncio.sleep(0.5)


async def load(
    port: int | list[int],
    tokens: list[str],
    spec: str,
    task_ids: dict[str, str],
    submitters: int,
    readers: int,
    duration: float,
    db_path: Path | None,
) -> tuple[Tally, float, list[int]]:
    body = spec.encode()
    ports = port if isinstance(port, list) else [port]
    tally = Tally()
    wal_seen: list[int] = []
    t0 = time.monotonic()
    stop_at = t0 + duration

    def submitter(token: str, port: int):
        request = http_request("POST", "/api/v2/tasks", port, token, body)
        return lambda: ("submit", request, 201)

    def reader(token: str, port: int):
        cycle = itertools.cycle(
            [
                ("/healthz", http_request("GET", "/healthz", port, token)),
                ("list", http_request("GET", "/api/v2/tasks?limit=50", port, token)),
                ("get task", http_request("GET", f"/api/v2/tasks/{task_ids[token]}", port, token)),
            ]
        )
        return lambda: (*next(cycle), 200)

    def at(i: int) -> int:  # clients spread over the API processes
        return ports[i % len(ports)]

    jobs = [client_loop(at(i), submitter(tokens[i % len(tokens)], at(i)), stop_at, tally) for i in range(submitters)]
    jobs += [client_loop(at(i), reader(tokens[i % len(tokens)], at(i)), stop_at, tally) for i in range(readers)]
    await asyncio.gather(watch_wal(db_path, stop_at, wal_seen), *jobs)
    return tally, time.monotonic() - t0, wal_seen


def uncached(sandbox, n: int | None = None) -> str:
    """A spec whose overrides were never composed (a distinct batch size)."""
    n = next(_unique) if n is None else n
    return task_yaml(sandbox, "ppo", n_gpus_per_node=64, overrides=[f"data.train_batch_size={n}"])


async def flood(
    port: int, sandbox, flooder: str, victim: str, clients: int, seconds: float
) -> tuple[Tally, list[float]]:
    tally = Tally()
    stop_at = time.monotonic() + seconds

    def flood_requests():
        return "flood", http_request("POST", "/api/v2/tasks", port, flooder, uncached(sandbox).encode()), 201

    async def victim_loop(out: list[float]) -> None:
        await asyncio.sleep(1.0)  # let the flood build its backlog first
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop_at:
                request = http_request("POST", "/api/v2/tasks", port, victim, uncached(sandbox).encode())
                t0 = time.perf_counter()
                status, body = await exchange(reader, writer, request, 60)
                if status != 201:
                    tally.errors.append(f"victim: {status} {body[:200]!r}")
                out.append(time.perf_counter() - t0)
                await asyncio.sleep(0.5)
        finally:
            writer.close()

    victim_lat: list[float] = []
    await asyncio.gather(
        victim_loop(victim_lat),
        *(client_loop(port, flood_requests, stop_at, tally, timeout=60) for _ in range(clients)),
    )
    return tally, victim_lat


def start_bare(port: int, workdir: Path) -> subprocess.Popen:
    """The baseline server (`bench/bare_server.py`) on `port`, answering."""
    log = open(workdir / "bare.log", "ab")
    script = Path(__file__).with_name("bare_server.py")
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the bare server did not start")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """Seconds the machine's cores have been busy and in all, so far (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


SETTLE_MAX_S = 5.0  # the longest wait for Argus to go quiet before a bare round


def settle(cpu: Callable[[], float], quiet: float = 0.1, window_s: float = 0.5) -> None:
    """Wait (at most SETTLE_MAX_S) until `cpu()` grows by less than `quiet` core over a window."""
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        c0 = cpu()
        time.sleep(window_s)
        if (cpu() - c0) / window_s < quiet:
            return


def accept_phase(
    port: int | list[int],
    workdir: Path,
    tokens: list[str],
    spec: str,
    server_pid: int | list[int],
    args: argparse.Namespace,
    scheduler_pid: int | None = None,
) -> bool:
    """Phase 0: the same submit load against the bare endpoint, then Argus; prints the ratio.

    Returns whether Argus answered every request (no errors).
    """
    ports = port if isinstance(port, list) else [port]
    pids = server_pid if isinstance(server_pid, list) else [server_pid]
    bare_port = free_port(ports[0] + 100)
    bare = start_bare(bare_port, workdir)
    profilers = []
    for out, pid in ((args.profile, pids[0]), (args.profile_scheduler, scheduler_pid)):
        if out and pid:
            spy = str(Path(sys.executable).with_name("py-spy"))
            # Argus idles while the bare rounds run; each round may first wait for it to settle.
            duration = str(int(2 * args.accept_seconds + args.accept_rounds * (SETTLE_MAX_S + 1) + 5))
            command = [spy, "record", "--gil", "-r", "100", "-d", duration, "-f", "raw", "-o", str(out)]
            profilers.append(
                subprocess.Popen(
                    [*command, "-p", str(pid), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
                )
            )
    b_tally, a_tally, b_elapsed, a_elapsed = Tally(), Tally(), 0.0, 0.0
    b_cpu = a_cpu = s_cpu = g_cpu = busy = every = idle_argus = 0.0

    def argus_cpu() -> float:  # Argus's processes (API and scheduler), all threads
        return sum(map(cpu_seconds, pids)) + (cpu_seconds(scheduler_pid) if scheduler_pid else 0.0)

    rounds: list[tuple[float, float]] = []  # each round's bare and Argus rates
    each = args.accept_seconds / args.accept_rounds
    try:
        for _ in range(args.accept_rounds):  # alternated, so that both see the machine as it is
            settle(argus_cpu)  # the scheduler done with the last round's tasks
            c0, idle0 = cpu_seconds(bare.pid), argus_cpu()
            tally, elapsed, _ = asyncio.run(load(bare_port, tokens, spec, {}, args.accept_clients, 0, each, None))
            b_cpu += cpu_seconds(bare.pid) - c0
            idle_argus += argus_cpu() - idle0
            b_tally.merge(tally)
            b_elapsed += elapsed
            round_bare = len(tally.lat["submit"]) / elapsed
            c0, s0 = sum(map(cpu_seconds, pids)), cpu_seconds(scheduler_pid) if scheduler_pid else 0.0
            g0, (busy0, all0) = time.process_time(), machine_busy()
            tally, elapsed, _ = asyncio.run(load(ports, tokens, spec, {}, args.accept_clients, 0, each, None))
            a_cpu += sum(map(cpu_seconds, pids)) - c0
            s_cpu += cpu_seconds(scheduler_pid) - s0 if scheduler_pid else 0.0
            busy1, all1 = machine_busy()
            g_cpu, busy, every = g_cpu + time.process_time() - g0, busy + busy1 - busy0, every + all1 - all0
            a_tally.merge(tally)
            a_elapsed += elapsed
            rounds.append((round_bare, len(tally.lat["submit"]) / elapsed))
    finally:
        bare.terminate()
        bare.wait(timeout=30)
    for profiler in profilers:
        profiler.wait(timeout=60)
    bare_rate = len(b_tally.lat["submit"]) / b_elapsed
    argus_rate = len(a_tally.lat["submit"]) / a_elapsed
    print(
        f"accept: {args.accept_clients} clients post TaskSpecs for {args.accept_seconds:.0f} s to each, "
        f"in {args.accept_rounds} alternated round(s) of {each:.0f} s"
    )
    for name, tally, elapsed in (("bare 201", b_tally, b_elapsed), ("argus", a_tally, a_elapsed)):
        xs = tally.lat["submit"]
        print(
            f"  {name:<9} {len(xs) / elapsed:7.0f} req/s  p50 {pct(xs, 50):7.1f} ms  p99 {pct(xs, 99):7.1f} ms  "
            f"max {max(xs, default=0) * 1000:7.1f} ms  errors {len(tally.errors)}"
        )
    p99 = pct(a_tally.lat["submit"], 99)
    ratio = argus_rate / bare_rate if bare_rate else 0.0
    print(
        f"  ratio argus / bare = {ratio:.3f}  (target >= 0.25: {'yes' if ratio >= 0.25 else 'NO'}); "
        f"argus p99 {p99:.1f} ms (target < 100 ms: {'yes' if p99 < 100 else 'NO'})"
    )
    if len(rounds) > 1:
        each_round = "; ".join(f"{a:.0f} / {b:.0f} = {a / b if b else 0:.3f}" for b, a in rounds)
        print(f"  each round, argus / bare per second: {each_round}")
        print(
            f"  Argus's own background while the bare rounds ran (after settling: scheduler passes, checkpoints): "
            f"{idle_argus / b_elapsed:.2f} core(s)"
        )
    # CPU per answered request: what each costs the server, whatever else shares the cores.
    b_ms = b_cpu * 1000 / max(1, len(b_tally.lat["submit"]))
    a_ms = a_cpu * 1000 / max(1, len(a_tally.lat["submit"]))
    print(
        f"  server CPU: bare {b_cpu / b_elapsed:.2f} core(s), {b_ms:.3f} ms per request; argus "
        f"{a_cpu / a_elapsed:.2f} core(s), {a_ms:.3f} ms per task ({a_ms / b_ms if b_ms else 0:.1f} x bare); "
        f"0.25 x bare would take {0.25 * bare_rate * a_ms / 1000:.1f} core(s) of argus at this cost"
    )
    if scheduler_pid:
        print(f"  (not counted above: the scheduler's own process, {s_cpu / a_elapsed:.2f} core(s))")
    cores = os.cpu_count() or 1
    busy = busy / every * cores if every > 0 else 0.0
    other = busy - (a_cpu + s_cpu + g_cpu) / a_elapsed
    print(
        f"  machine: {busy:.2f} of {cores} cores busy: API {a_cpu / a_elapsed:.2f}, scheduler {s_cpu / a_elapsed:.2f}, "
        f"load generator {g_cpu / a_elapsed:.2f}, the rest (Ray, the database, other processes) {other:.2f}"
    )
    if a_tally.errors:
        print("  first error:", a_tally.errors[0])
    return not a_tally.errors


def api_processes(server_pid: int, n: int, timeout_s: float = 60.0) -> list[int]:
    """The server's API processes: itself and the `n` - 1 it starts (`argus.service.api_processes`)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        others = [
            c.pid
            for c in psutil.Process(server_pid).children()
            if "argus.service.api_processes" in " ".join(c.cmdline())
        ]
        if len(others) >= n - 1 or time.monotonic() > deadline:
            return [server_pid, *others]
        time.sleep(0.2)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


def load_phase(port: int, tokens: list[str], spec: str, task_ids: dict, db_path: Path | None, args) -> int:
    """Phase 2: submitters and readers together; returns the number of errors."""
    print(
        f"load: {args.submitters} submitters + {args.readers} readers over {args.users} users, "
        f"{args.duration:.0f} s; WAL before {wal_size(db_path) / 2**20:.1f} MiB"
    )
    tally, elapsed, wal_seen = asyncio.run(
        load(port, tokens, spec, task_ids, args.submitters, args.readers, args.duration, db_path)
    )
    tally.report(["submit", "/healthz", "list", "get task", "submit 429"], elapsed)
    print(
        f"  accepted {len(tally.lat['submit']) / elapsed:.0f} tasks/s; 429s {sum(tally.limited.values())}; "
        f"errors {len(tally.errors)}"
    )
    if tally.errors:
        print("  first error:", tally.errors[0])
    if db_path is not None:
        print(
            f"  WAL: largest {max(wal_seen, default=0) / 2**20:.1f} MiB while loaded, "
            f"{wal_size(db_path) / 2**20:.1f} MiB at the end"
        )
    return len(tally.errors)


def flood_phase(admin: ArgusClient, base: str, port: int, sandbox, args) -> int:
    """Phase 3: one user's flood of uncached specs, another user's latency; returns the errors."""
    admin.create_user("flooder")
    admin.create_user("victim")
    flooder = admin.issue_token("flooder")["token"]
    victim = admin.issue_token("victim")["token"]
    alone = []
    for _ in range(3):
        t0 = time.perf_counter()
        ArgusClient(base, victim, timeout=60).submit(uncached(sandbox))
        alone.append(time.perf_counter() - t0)
    ftally, victim_lat = asyncio.run(flood(port, sandbox, flooder, victim, args.flood_clients, args.flood_seconds))
    print(
        f"flood: 1 user x {args.flood_clients} clients posting uncached specs for "
        f"{args.flood_seconds:.0f} s; another user submits an uncached spec every 0.5 s"
    )
    print(
        f"  other user's uncached submit alone:      p50 {statistics.median(alone) * 1000:7.0f} ms  "
        f"max {max(alone) * 1000:7.0f} ms  (n={len(alone)})"
    )
    if victim_lat:
        print(
            f"  other user's uncached submit in the flood: p50 {statistics.median(victim_lat) * 1000:7.0f} ms  "
            f"max {max(victim_lat) * 1000:7.0f} ms  (n={len(victim_lat)})"
        )
    fl = ftally.lat.get("flood", [])
    print(f"  flooder: {len(fl)} accepted, {ftally.limited['flood']} answered 429, errors {len(ftally.errors)}")
    if ftally.errors:
        print("  first error:", ftally.errors[0])
    return len(ftally.errors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument(
        "--postgres-url",
        default=os.environ.get("ARGUS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--accept-clients", type=int, default=32, help="clients of the accept phase")
    ap.add_argument("--accept-seconds", type=float, default=20.0, help="each side of the accept phase (0 skips it)")
    ap.add_argument(
        "--accept-rounds",
        type=lambda v: max(1, int(v)),
        default=4,
        help="the accept phase's sides alternate in this many rounds each (at least 1)",
    )
    ap.add_argument("--profile", type=Path, help="py-spy the server during the accept phase into FILE")
    ap.add_argument("--profile-scheduler", type=Path, help="py-spy the scheduler process meanwhile into FILE")
    ap.add_argument(
        "--rate-per-user", type=float, default=None, help="service.submit_rate_per_s (default: no per-user limit)"
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="a setting: scheduler.enabled=false"
    )
    ap.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="service.api_processes: the server's API processes (their CPU is summed)",
    )
    ap.add_argument("--submitters", "--clients", type=int, default=64, help="clients posting TaskSpecs")
    ap.add_argument("--readers", type=int, default=16, help="clients reading (healthz, list, one task)")
    ap.add_argument("--users", type=int, default=16, help="users the clients are spread over")
    ap.add_argument("--duration", type=float, default=30.0, help="the load phase (0 skips it and the flood)")
    ap.add_argument("--samples", type=int, default=10, help="acceptance -> submission samples (0 skips)")
    ap.add_argument("--flood-seconds", type=float, default=15.0, help="the fairness phase (0 skips it)")
    ap.add_argument("--flood-clients", type=int, default=8)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="argus-bench-"))
    schema = None
    db_path: Path | None = None
    if args.db == "postgres":
        import sqlalchemy as sa

        schema = f"argus_bench_{secrets.token_hex(4)}"
        engine = sa.create_engine(args.postgres_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in args.postgres_url else "?"
        db_url = f"{args.postgres_url}{sep}options=-csearch_path%3D{schema}"
    else:
        db_path = workdir / "argus.sqlite3"
        db_url = f"sqlite:///{db_path}"
    gcs = free_port(6500)
    cluster, _ = local.up(str(workdir), workers=2, gpus_per_worker=4, gcs_port=gcs, dashboard_port=free_port(8500))
    proc = None
    try:
        sandbox = prepare(workdir)
        port = free_port(18600)
        settings = [*args.set, f"service.api_processes={args.api_processes}"]
        proc = start_server(cluster, workdir, db_url, port, args.rate_per_user, settings)
        base = f"http://127.0.0.1:{port}"
        admin = ArgusClient(base, ADMIN)
        child = admin.health()["scheduler"]["process"]
        tokens: list[str] = []
        for i in range(args.users):
            admin.create_user(f"bench{i}")
            tokens.append(admin.issue_token(f"bench{i}")["token"])
        client = ArgusClient(base, tokens[0])
        shape = "the API, the scheduler in a child process" if child else "1 process (API + scheduler thread)"
        print(
            f"machine: {os.cpu_count()} cores; database: {args.db}; server: {shape}, "
            f"Ray: head + 2 workers x 4 GPUs; per-user submit rate: {args.rate_per_user or 'no limit'}"
        )
        spec = task_yaml(sandbox, "ppo", n_gpus_per_node=64)  # fits no node: parked by the scheduler
        task_ids = {t: ArgusClient(base, t).submit(spec)["task_id"] for t in tokens}  # warms the check cache
        ports = [port]
        api_pids = api_processes(proc.pid, args.api_processes)
        if len(api_pids) > 1:
            print(f"accept phase: {len(api_pids)} API processes (service.api_processes) on one socket")
        errors = 0
        if args.samples:
            accept_to_submit(client, sandbox, args.samples)
        if args.duration > 0:
            errors += load_phase(port, tokens, spec, task_ids, db_path, args)
        if args.flood_seconds > 0 and args.duration > 0:
            errors += flood_phase(admin, base, port, sandbox, args)
        if args.accept_seconds > 0:
            waiting = len(client.queue()["pending"])
            if waiting > len(tokens):
                print(f"(the accept phase runs after the others: {waiting} of bench0's tasks wait already)")
            errors += not accept_phase(
                ports,
                workdir,
                tokens,
                spec,
                api_pids,
                args,
                admin.health()["scheduler"]["process"]["pid"] if child else None,
            )
        queue = client.queue()
        parked = sum(1 for t in queue["pending"] if t["state"] == "PENDING_RESOURCES")
        print(f"scheduler: {parked} of {len(queue['pending'])} of bench0's waiting tasks parked in PENDING_RESOURCES")
        return 0 if not errors else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        local.down(str(workdir))
        shutil.rmtree(workdir, ignore_errors=True)
        if schema:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    sys.exit(main())
