"""Code snapshots through the API (issue 12), over a real database (SQLite, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set) and the real filesystem.

The SDK and the CLI talk to the real app in-process (the TestClient's transport). A push lands,
read-only, in `<shared_root>/users/<user>/code/<sha256>/` with the client's own manifest hash;
an unchanged directory uploads nothing; a name means its newest push; another user's snapshot is
"not found", word for word; a snapshot that a task which has not ended uses cannot be deleted.
Every archive attack is refused with the member or the limit named, and leaves nothing on disk.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import ADMIN_TOKEN, Api, Backend, User, backend, sandbox
from fastapi.testclient import TestClient
from pydantic import BaseModel

from argus.client import service_cli
from argus.client.cli import app as cli_app
from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.client.sdk_code import code_archive
from argus.domain.code_manifest import scan
from argus.domain.paths import code_root, snapshot_dir
from argus.service.api_models import ErrorBody
from argus.service.api_models_code import CodeDeleted, CodeList, CodePushAnswer, CodeSnapshotBody
from argus.service.app import create_app
from argus.settings import parse_settings
from argus.testing import FakeClock
from argus.testing.cli import invoke
from argus.testing.fakes import FakeJobs, FakeSnapshots
from argus.testing.sandbox import Sandbox

LIMIT = 64 * 1024  # service.code_max_bytes here
GZIP = {"Content-Type": "application/gzip"}


class Recording(httpx.BaseTransport):
    """The TestClient's transport, recording each request's method, path and body size."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner
        self.seen: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, len(request.read())))
        return self.inner.handle_request(request)


class World(Api):
    clock: FakeClock
    transport: Recording

    def sdk(self, who: User) -> ArgusClient:
        return ArgusClient("http://testserver", who.token, transport=self.transport)

    def code_dir(self, who: User) -> Path:
        return Path(code_root(str(self.sandbox.shared_root), who.user_id))

    def on_disk(self, who: User) -> set[str]:
        d = self.code_dir(who)
        return set(os.listdir(d)) if d.is_dir() else set()

    def push_raw(self, who: User, body: bytes, name: str = "raw", **headers: str):
        return self.post(who, "/api/v2/code", params={"name": name}, content=body, headers={**GZIP, **headers})


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend, tmp_path_factory) -> Iterator[World]:
    clock, jobs = FakeClock(1_800_000_000.0), FakeJobs()
    jobs.clock = clock
    settings = parse_settings(
        {
            "ray": {"shared_root": str(sandbox.shared_root)},
            "service": {"db_url": backend.url, "max_body_bytes": 4096, "code_max_bytes": LIMIT},
            "scheduler": {"enabled": False},
        },
        "code test config",
        environ={},
    )
    app = create_app(
        settings,
        jobs=jobs,
        snapshots=FakeSnapshots({"w1": 4}),
        clock=clock,
        run_scheduler=False,
        run_nodes=False,
        environ={"MVP_INTERNAL_TOKEN": ADMIN_TOKEN},
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        w = World(client, sandbox, backend)
        w.clock, w.transport = clock, Recording(client._transport)
        yield w
    app.state.db.dispose()


def make_tree(root: Path, marker: str = "1") -> Path:
    """A small project: code, an executable, a symlink, and what the ignore rules leave out."""
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "outputs").mkdir()
    (root / "train.py").write_text(f"MARKER = {marker}\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / ".git" / "HEAD").write_text("ref: main\n")
    (root / "outputs" / "big.ckpt").write_bytes(b"\1" * 1000)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / ".argusignore").write_text("# not code\noutputs/\n*.log\n")
    (root / "debug.log").write_text("noise\n")
    os.symlink("train.py", root / "main.py")
    return root


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb") as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as t,
    ):
        for info, data in members:
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


def modes(root: Path) -> dict[str, int]:
    out = {}
    for here, dirs, files in os.walk(root):
        for n in dirs + files:
            full = Path(here) / n
            out[str(full.relative_to(root))] = stat.S_IMODE(os.lstat(full).st_mode)
    return out


# -- push, unchanged, names, list -------------------------------------------------------------------
def test_push_lands_read_only_with_the_client_hash_and_an_unchanged_push_uploads_nothing(world, tmp_path):
    alice = world.new_user("alice")
    tree = make_tree(tmp_path / "proj")
    sdk = world.sdk(alice)
    expected = scan(str(tree))

    first = sdk.push_code(str(tree), name="proj")
    path = snapshot_dir(str(world.sandbox.shared_root), alice.user_id, expected.sha256)
    assert first["sha256"] == expected.sha256 and first["path"] == str(path)
    assert first["name"] == "proj" and first["unchanged"] is False
    assert first["files"] == 5 and first["size_bytes"] == expected.size_bytes
    assert first["bytes_uploaded"] > 0 and first["created_at"] == first["updated_at"]
    assert modes(Path(path)) == {
        ".argusignore": 0o440,
        "main.py": 0o777,  # a symlink's own mode
        "pkg": 0o550,
        "pkg/__init__.py": 0o440,
        "run.sh": 0o550,
        "train.py": 0o440,
    }
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o550
    assert (Path(path) / "main.py").read_text() == "MARKER = 1\n" and os.readlink(Path(path) / "main.py") == "train.py"
    assert world.on_disk(alice) == {expected.sha256}  # no temporary directory left
    posts = [s for s in world.transport.seen if s[0] == "POST" and s[1] == "/api/v2/code"]
    assert len(posts) == 1 and posts[0][2] == first["bytes_uploaded"]

    world.transport.seen.clear()
    world.clock.advance(10)
    again = sdk.push_code(str(tree), name="proj")
    assert again["unchanged"] is True and again["bytes_uploaded"] == 0 and again["sha256"] == expected.sha256
    assert [(m, p) for m, p, _ in world.transport.seen] == [
        ("GET", f"/api/v2/code/{expected.sha256}"),
        ("POST", f"/api/v2/code/{expected.sha256}:touch"),
    ]
    assert all(size == 0 for _, _, size in world.transport.seen)

    # The archive's layout does not matter: `./` names, directory members and ignored files sent
    # anyway (dropped by the server) give the same snapshot.
    loose = archive(
        (member("./", tarfile.DIRTYPE, mode=0o755), None),
        (member("./pkg/", tarfile.DIRTYPE, mode=0o755), None),
        (member("./pkg/__init__.py"), b""),
        (member("./train.py", mode=0o600), b"MARKER = 1\n"),
        (member("./run.sh", mode=0o700), b"#!/bin/sh\necho hi\n"),
        (member("./main.py", tarfile.SYMTYPE, "train.py"), None),
        (member("./.argusignore"), b"# not code\noutputs/\n*.log\n"),
        (member("./.git/HEAD"), b"ref: main\n"),
        (member("./outputs/big.ckpt"), b"x"),
        (member("./empty/", tarfile.DIRTYPE, mode=0o755), None),
    )
    r = world.push_raw(alice, loose, "proj")
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == expected.sha256 and r.json()["unchanged"] is True
    assert r.json()["bytes_uploaded"] == len(loose)
    assert sorted(os.listdir(path)) == [".argusignore", "main.py", "pkg", "run.sh", "train.py"]


def test_a_name_means_its_newest_push_and_the_list_shows_tasks(world, tmp_path):
    bob = world.new_user("bob")
    sdk = world.sdk(bob)
    v1 = sdk.push_code(str(make_tree(tmp_path / "v1", "1")), name="exp")
    world.clock.advance(5)
    v2 = sdk.push_code(str(make_tree(tmp_path / "v2", "2")), name="exp")
    assert v2["sha256"] != v1["sha256"] and v2["unchanged"] is False
    code = world.client.app.state.code
    assert code.resolve(bob.user_id, "exp").sha256 == v2["sha256"]
    assert code.resolve(bob.user_id, v1["sha256"][:8]).sha256 == v1["sha256"]
    world.clock.advance(5)
    back = sdk.push_code(str(tmp_path / "v1"), name="exp")  # unchanged, yet now the newest "exp"
    assert back["unchanged"] is True and back["bytes_uploaded"] == 0
    assert code.resolve(bob.user_id, "exp").sha256 == v1["sha256"]
    assert sdk.code_snapshot("exp")["sha256"] == v1["sha256"]

    task = world.submit(bob)
    code.store.record_uses(task, bob.user_id, [v2["sha256"]], v1["sha256"])
    assert code.store.pinned_code(task) == v1["sha256"]
    listed = sdk.code_snapshots()["snapshots"]
    assert [(s["sha256"], s["name"], s["tasks"]) for s in listed] == [
        (v1["sha256"], "exp", [task]),
        (v2["sha256"], "exp", [task]),
    ]
    assert listed[0]["path"] == code.snapshot_path(bob.user_id, v1["sha256"])
    with pytest.raises(ArgusAPIError) as err:
        sdk.code_snapshot("ffffffff")
    assert err.value.status == 404 and "'ffffffff'" in err.value.message


def test_another_user_sees_nothing_and_cannot_delete(world, tmp_path):
    carol, dave = world.new_user("carol"), world.new_user("dave")
    tree = make_tree(tmp_path / "p")
    mine = world.sdk(carol).push_code(str(tree), name="shared-name")
    sha = mine["sha256"]
    missing = "0" * 64
    for ref in (sha, sha[:8], "shared-name"):
        theirs = world.get(dave, f"/api/v2/code/{ref}")
        absent = world.get(dave, f"/api/v2/code/{missing[: len(ref)] if ref != 'shared-name' else 'no-such'}")
        assert theirs.status_code == absent.status_code == 404
        assert theirs.json() == {"error": "not_found", "message": f"no code snapshot {ref!r}", "problems": []}
        assert world.client.delete(f"/api/v2/code/{ref}", headers=dave.headers).json() == theirs.json()
    assert world.post(dave, f"/api/v2/code/{sha}:touch", params={"name": "x"}).status_code == 404
    assert world.get(dave, "/api/v2/code").json() == {"snapshots": []}
    # Pushing the same content makes dave's own copy: nothing says carol has it.
    copy = world.sdk(dave).push_code(str(tree), name="mine")
    assert copy["sha256"] == sha and copy["unchanged"] is False and copy["bytes_uploaded"] > 0
    assert copy["path"] != mine["path"] and dave.user_id in copy["path"]
    assert Path(mine["path"]).is_dir() and world.get(carol, f"/api/v2/code/{sha}").json()["name"] == "shared-name"


def test_delete_is_refused_while_a_task_that_has_not_ended_uses_it(world, tmp_path):
    erin = world.new_user("erin")
    sdk = world.sdk(erin)
    snap = sdk.push_code(str(make_tree(tmp_path / "p")), name="inuse")
    task = world.submit(erin)
    store = world.client.app.state.code.store
    store.record_uses(task, erin.user_id, [snap["sha256"]], None)
    assert store.active_users_of(erin.user_id, snap["sha256"]) == [task]
    r = world.client.delete("/api/v2/code/inuse", headers=erin.headers)
    assert r.status_code == 409 and r.json()["error"] == "conflict" and task in r.json()["message"]
    assert Path(snap["path"]).is_dir()

    assert world.post(erin, f"/api/v2/tasks/{task}:cancel").status_code == 200
    assert store.active_users_of(erin.user_id, snap["sha256"]) == []
    assert sdk.delete_code(snap["sha256"][:10]) == {"sha256": snap["sha256"], "name": "inuse", "deleted": True}
    assert not Path(snap["path"]).exists() and world.on_disk(erin) == set()
    assert world.get(erin, f"/api/v2/code/{snap['sha256']}").status_code == 404
    assert sdk.code_snapshots() == {"snapshots": []}


def test_an_ambiguous_prefix_is_a_400_naming_the_ref(world):
    code = world.client.app.state.code
    frank = world.new_user("frank")
    for sha in ("abcdef01" + "0" * 56, "abcdef01" + "1" * 56):
        code.store.add(frank.user_id, sha, "x", 1, 1, world.clock())
    r = world.get(frank, "/api/v2/code/abcdef01")
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "ref"
    assert "abcdef010000" in r.json()["problems"][0]["message"]


# -- attacks ------------------------------------------------------------------------------------
ATTACKS: dict[str, tuple[Any, str, str]] = {
    # name: (members, the member named, words of the reason)
    "dotdot": ([(member("../x"), b"evil")], "../x", "'..'"),
    "dotdot-inside": ([(member("a/../../x"), b"evil")], "a/../../x", "'..'"),
    "absolute": ([(member("/etc/x"), b"evil")], "/etc/x", "absolute"),
    "symlink-absolute": ([(member("pw", tarfile.SYMTYPE, "/etc/passwd"), None)], "pw", "outside"),
    "symlink-up": ([(member("d/up", tarfile.SYMTYPE, "../../x"), None)], "d/up", "outside"),
    "symlink-via-link": (
        [(member("here", tarfile.SYMTYPE, "."), None), (member("up", tarfile.SYMTYPE, "here/.."), None)],
        "up",
        "outside",
    ),
    "write-through-link": (
        [
            (member("sub", tarfile.DIRTYPE, mode=0o755), None),
            (member("l", tarfile.SYMTYPE, "sub"), None),
            (member("l/x"), b"evil"),
        ],
        "l/x",
        "not a directory",
    ),
    "hardlink-absolute": ([(member("h", tarfile.LNKTYPE, "/etc/passwd"), None)], "h", "outside"),
    "hardlink-up": ([(member("h", tarfile.LNKTYPE, "../x"), None)], "h", "outside"),
    "hardlink-unknown": ([(member("h", tarfile.LNKTYPE, "later.txt"), None)], "h", "not a file earlier"),
    "char-device": ([(member("null", tarfile.CHRTYPE), None)], "null", "device"),
    "block-device": ([(member("sda", tarfile.BLKTYPE), None)], "sda", "device"),
    "fifo": ([(member("pipe", tarfile.FIFOTYPE), None)], "pipe", "fifo"),
    "twice": ([(member("a.py"), b"1"), (member("a.py"), b"2")], "a.py", "twice"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_archive_attack_is_refused_naming_the_member_and_leaves_nothing(world, attack):
    who = world.new_user("att")
    world.push_raw(who, archive((member("ok.py"), b"ok")), "base").raise_for_status()
    before = world.on_disk(who)
    members, named, words = ATTACKS[attack]
    body = archive((member("fine.py"), b"fine"), *members)
    r = world.push_raw(who, body, attack)
    assert r.status_code == 400, r.text
    problems = r.json()["problems"]
    assert problems and problems[0]["field"] == f"archive member {named!r}", problems
    assert words in problems[0]["message"] and named in r.json()["message"]
    assert world.on_disk(who) == before
    assert [s["name"] for s in world.get(who, "/api/v2/code").json()["snapshots"]] == ["base"]


def test_archives_that_expand_past_the_limit_are_413_naming_it_and_the_largest_files(world):
    who = world.new_user("big")
    before = world.on_disk(who)
    bomb = archive((member("small.py"), b"x"), (member("bomb.bin"), b"\0" * (20 * LIMIT)))
    assert len(bomb) < LIMIT // 8  # a small body, a large content
    r = world.push_raw(who, bomb)
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "too_large" and f"{LIMIT} bytes" in body["message"]
    assert "service.code_max_bytes" in body["message"] and "bomb.bin" in body["message"]
    assert body["problems"][0] == {"field": "archive member 'bomb.bin'", "message": "1.2 MiB"}

    sizes = [10_000, 20_000, 30_000, 8_000, 1_000]  # the fourth passes the limit; the fifth is never read
    many = archive(*[(member(f"part{i}.bin"), bytes([65 + i]) * n) for i, n in enumerate(sizes)])
    r = world.push_raw(who, many)
    assert r.status_code == 413
    assert [p["field"] for p in r.json()["problems"]] == [f"archive member 'part{i}.bin'" for i in (2, 1, 0, 3)]

    # A header that expands without end (a GNU long name) is cut off at the limit too.
    longname = archive((member("n" * (17 * 1024 * 1024)), b"x"))
    assert len(longname) < LIMIT
    r = world.push_raw(who, longname)
    assert r.status_code == 413 and "service.code_max_bytes" in r.json()["message"]
    assert world.on_disk(who) == before


def test_bodies_the_route_refuses(world):
    who = world.new_user("body")
    r = world.push_raw(who, os.urandom(LIMIT + 1))
    assert r.status_code == 413 and r.json()["message"] == f"the body is over {LIMIT} bytes (service.code_max_bytes)"
    r = world.post_yaml(who, "x" * 5000)  # other routes keep service.max_body_bytes
    assert r.status_code == 413 and "service.max_body_bytes" in r.json()["message"]
    r = world.push_raw(who, b"not an archive")
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "<body>"
    r = world.push_raw(who, archive())
    assert r.status_code == 400 and "no files" in r.json()["message"]
    r = world.push_raw(who, archive((member("a.py"), b"1")), **{"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = world.push_raw(who, archive((member("a.py"), b"1")), name="deadbeef00")
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "name"
    r = world.post(who, "/api/v2/code", content=archive((member("a.py"), b"1")), headers=GZIP)
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "name"
    assert world.on_disk(who) == set()


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_push_list_and_delete(world, tmp_path, monkeypatch):
    monkeypatch.setattr(service_cli, "make_client", lambda url, token: world.sdk(User("?", token)))
    gina = world.new_user("gina")
    args = ("--url", "http://testserver", "--token", gina.token)
    tree = make_tree(tmp_path / "my proj")
    sha = scan(str(tree)).sha256

    out = invoke(cli_app, "code", "push", str(tree), *args)
    assert out.exit_code == 0, out.err_text
    lines = out.out_text.strip().splitlines()
    assert lines[0].startswith(f"pushed {sha[:12]} my-proj (5 files, ") and lines[0].endswith(" B)")
    assert lines[1] == str(snapshot_dir(str(world.sandbox.shared_root), gina.user_id, sha))
    out = invoke(cli_app, "code", "push", str(tree), "--name", "my-proj", *args)
    assert out.exit_code == 0 and out.out_text.splitlines()[0] == f"unchanged {sha[:12]} my-proj"
    answer = invoke(cli_app, "code", "push", str(tree), "--json", *args).json()
    assert answer["bytes_uploaded"] == 0 and answer["unchanged"] is True and answer["sha256"] == sha

    task = world.submit(gina)
    world.client.app.state.code.store.record_uses(task, gina.user_id, [], sha)
    table = invoke(cli_app, "code", "list", *args)
    assert table.exit_code == 0
    row = next(line for line in table.out_text.splitlines() if sha[:12] in line)
    assert "my-proj" in row and task in row and " 5 " in row
    assert [s["sha256"] for s in invoke(cli_app, "code", "list", "--json", *args).json()["snapshots"]] == [sha]

    refused = invoke(cli_app, "code", "delete", "my-proj", *args)
    assert refused.exit_code == 1 and "409 conflict" in refused.err_text and task in refused.err_text
    world.post(gina, f"/api/v2/tasks/{task}:cancel").raise_for_status()
    done = invoke(cli_app, "code", "delete", "my-proj", *args)
    assert done.exit_code == 0 and done.out_text.strip() == f"deleted {sha[:12]} my-proj"

    bad = invoke(cli_app, "code", "push", str(tmp_path / "nope"), *args)
    assert bad.exit_code == 2 and "is not a directory" in bad.err_text
    bad = invoke(cli_app, "code", "push", str(tree), "--name", "bad/name", *args)
    assert bad.exit_code == 2 and "name:" in bad.err_text
    (tmp_path / "evil").mkdir()
    os.symlink("/etc/passwd", tmp_path / "evil" / "pw")
    bad = invoke(cli_app, "code", "push", str(tmp_path / "evil"), *args)
    assert bad.exit_code == 2 and "archive member 'pw'" in bad.err_text
    missing = invoke(cli_app, "code", "delete", "nothing-here", *args)
    assert missing.exit_code == 1 and "404 not_found" in missing.err_text


def test_a_directory_over_the_body_limit_is_refused_naming_its_largest_files(world, tmp_path):
    who = world.new_user("huge")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "weights.bin").write_bytes(os.urandom(LIMIT + 100))  # incompressible
    (tmp_path / "p" / "train.py").write_text("print(1)\n")
    with pytest.raises(ArgusAPIError) as err:
        world.sdk(who).push_code(str(tmp_path / "p"))
    assert err.value.status == 413 and "service.code_max_bytes" in err.value.message
    assert "weights.bin (64.1 KiB)" in err.value.message
    assert [p["field"] for p in err.value.problems] == ["weights.bin", "train.py"]
    assert world.on_disk(who) == set()


def test_a_name_the_filesystem_cannot_hold_is_refused_naming_it(world):
    who = world.new_user("longname")
    name = "d/" + "n" * 300
    r = world.push_raw(who, archive((member(name), b"x")))
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == f"archive member {name!r}"
    assert "cannot be written" in r.json()["problems"][0]["message"]
    assert world.on_disk(who) == set()
