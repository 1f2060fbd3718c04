"""The code snapshot manifest (`argus.domain.code_manifest`) and the snapshot rules (`argus.domain.code`).

The ignore rules over real directories (`.git`, `__pycache__`, `.argusignore` patterns), and the
hash: pinned (a client and a server of different releases must agree), independent of order,
times and empty directories, and changed by every thing the manifest names: a byte, a path, an
executable bit, a symlink's target, a file turned into a link. Also the deterministic archive
the SDK uploads.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

from argus.client.sdk_code import code_archive
from argus.domain.code import code_name_problem, default_name, human_size, looks_like_prefix
from argus.domain.code_manifest import IgnoreRules, ManifestEntry, ManifestError, manifest_sha256, scan


def write(root: Path, rel: str, text: str = "x", mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def paths(root: Path) -> list[str]:
    return [e.path for e in scan(str(root)).entries]


def entry(path: str, content: bytes = b"x", executable: bool = False) -> ManifestEntry:
    return ManifestEntry(path, "file", executable, hashlib.sha256(content).hexdigest(), len(content))


# -- ignore rules -------------------------------------------------------------------------------
def test_git_and_pycache_are_always_left_out(tmp_path):
    write(tmp_path, "train.py")
    write(tmp_path, ".git/config")
    write(tmp_path, "pkg/__pycache__/mod.cpython-311.pyc")
    write(tmp_path, "pkg/mod.py")
    write(tmp_path, "pkg/.gitignore")  # only `.git` itself is special
    found = scan(str(tmp_path))
    assert [e.path for e in found.entries] == ["pkg/.gitignore", "pkg/mod.py", "train.py"]
    assert set(found.ignored) == {".git", "pkg/__pycache__"}


def test_argusignore_patterns_follow_gitignore_rules(tmp_path):
    write(
        tmp_path,
        ".argusignore",
        "# comment line\n\n*.ckpt\noutputs/\n/data\ndocs/*.md\n!keep.ckpt\n\\#literal\n",
    )
    for rel in (
        "a.ckpt",
        "deep/b/c.ckpt",  # a pattern without '/' matches a name at any depth
        "keep.ckpt",  # kept again by the negation
        "outputs/run1/log.txt",  # `dir/` leaves out the directory
        "src/outputs/x.txt",  # ... at any depth
        "notdir/outputs",  # a file named outputs is kept: `outputs/` is for directories
        "data/train.parquet",  # `/data` is anchored at the root
        "src/data/keep.txt",
        "docs/readme.md",  # `docs/*.md` is anchored, `*` does not cross '/'
        "docs/api/deep.md",
        "#literal",
        "# comment line",
        "train.py",
    ):
        write(tmp_path, rel)
    assert paths(tmp_path) == [
        "# comment line",
        ".argusignore",
        "docs/api/deep.md",
        "keep.ckpt",
        "notdir/outputs",
        "src/data/keep.txt",
        "train.py",
    ]


def test_ignore_rules_without_a_directory():
    rules = IgnoreRules.parse("build/\n**/tmp\nlogs/*.txt\n")
    assert rules.ignored("build", is_dir=True) and not rules.ignored("build", is_dir=False)
    assert rules.ignored("a/b/build", is_dir=True)
    assert rules.ignored("tmp", is_dir=False) and rules.ignored("x/y/tmp", is_dir=True)
    assert rules.ignored("logs/a.txt", is_dir=False) and not rules.ignored("logs/sub/a.txt", is_dir=False)
    assert rules.ignored("x/__pycache__", is_dir=True) and rules.ignored(".git", is_dir=False)
    assert IgnoreRules.parse("# only a comment\n\n").patterns == ()


# -- the manifest and its hash ------------------------------------------------------------------
def test_the_hash_is_pinned_and_independent_of_entry_order():
    entries = [entry("a.py", b"print(1)\n"), entry("bin/run.sh", b"#!/bin/sh\n", executable=True)]
    sha = manifest_sha256(entries)
    assert sha == manifest_sha256(list(reversed(entries)))
    assert sha == "047f45144b7db164dd1a544a63700329602661eb58fc6cf4dd6c19e6bf66d9c4"
    # the canonical text is part of the protocol between client and server:
    h = hashlib.sha256(b"argus-code-manifest-v1\n")
    for e in entries:
        name = e.path.encode()
        h.update(f"file {'x' if e.executable else '-'} {e.sha256} {len(name)}\n".encode() + name + b"\n")
    assert sha == h.hexdigest()


def test_every_named_thing_changes_the_hash():
    base = [entry("a.py"), entry("b.py", b"y")]
    sha = manifest_sha256(base)
    assert manifest_sha256([entry("a.py"), entry("b.py", b"z")]) != sha  # content
    assert manifest_sha256([entry("a.py"), entry("c.py", b"y")]) != sha  # path
    assert manifest_sha256([entry("a.py"), entry("b.py", b"y", executable=True)]) != sha  # exec bit
    link = ManifestEntry("b.py", "symlink", False, hashlib.sha256(b"y").hexdigest(), 1)
    assert manifest_sha256([entry("a.py"), link]) != sha  # a link whose target is the file's bytes
    assert manifest_sha256([entry("a.py")]) != sha
    # names that would run together in a naive encoding stay apart
    assert manifest_sha256([entry("a\nb")]) != manifest_sha256([entry("a"), entry("b")])
    with pytest.raises(ValueError, match="appears twice"):
        manifest_sha256([entry("a.py"), entry("a.py", b"other")])


def test_scan_hash_ignores_times_and_empty_dirs_but_not_modes_or_link_targets(tmp_path):
    write(tmp_path, "a.py", "print(1)\n")
    run = write(tmp_path, "bin/run.sh", "#!/bin/sh\n", 0o644)
    os.symlink("a.py", tmp_path / "link.py")
    first = scan(str(tmp_path))
    assert [(e.path, e.kind) for e in first.entries] == [
        ("a.py", "file"),
        ("bin/run.sh", "file"),
        ("link.py", "symlink"),
    ]
    assert first.entries[2].sha256 == hashlib.sha256(b"a.py").hexdigest()
    assert first.size_bytes == len("print(1)\n") + len("#!/bin/sh\n") + len("a.py")

    os.utime(tmp_path / "a.py", (1, 1))
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    write(tmp_path, "__pycache__/x.pyc")
    run.chmod(0o600)  # other mode bits than the executable ones do not count
    assert scan(str(tmp_path)).sha256 == first.sha256

    run.chmod(0o744)
    executable = scan(str(tmp_path))
    assert executable.sha256 != first.sha256 and executable.entries[1].executable
    run.chmod(0o644)
    (tmp_path / "link.py").unlink()
    os.symlink("bin/run.sh", tmp_path / "link.py")
    assert scan(str(tmp_path)).sha256 != first.sha256


def test_scan_refuses_what_is_not_a_file_dir_or_link(tmp_path):
    write(tmp_path, "a.py")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ManifestError) as err:
        scan(str(tmp_path))
    assert err.value.path == "pipe" and "not a file" in err.value.reason
    (tmp_path / "pipe").unlink()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.sock"))
        with pytest.raises(ManifestError, match=r"s\.sock"):
            scan(str(tmp_path))
    finally:
        sock.close()
    with pytest.raises(NotADirectoryError):
        scan(str(tmp_path / "a.py"))


def test_the_archive_is_deterministic_and_holds_exactly_the_manifest(tmp_path):
    write(tmp_path, "a.py", "print(1)\n")
    write(tmp_path, "bin/run.sh", "#!/bin/sh\n", 0o750)
    write(tmp_path, ".git/HEAD")
    os.symlink("../a.py", tmp_path / "bin" / "a.py")
    found = scan(str(tmp_path))
    body = code_archive(str(tmp_path), found.entries)
    os.utime(tmp_path / "a.py", (5, 5))
    assert code_archive(str(tmp_path), scan(str(tmp_path)).entries) == body
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        members = [(m.name, m.type, m.mode, m.mtime, m.uid, m.linkname) for m in tar.getmembers()]
    assert members == [
        ("a.py", tarfile.REGTYPE, 0o644, 0, 0, ""),
        ("bin/a.py", tarfile.SYMTYPE, 0o777, 0, 0, "../a.py"),
        ("bin/run.sh", tarfile.REGTYPE, 0o755, 0, 0, ""),
    ]


# -- names and refs ---------------------------------------------------------------------------------
def test_names_never_read_as_hash_prefixes():
    assert code_name_problem("verl-0.5_fix.2") is None
    assert code_name_problem("deadbeef12") is not None and "hex" in str(code_name_problem("deadbeef12"))
    assert code_name_problem("cafe") is None  # shorter than a prefix may be
    assert code_name_problem("") is not None and code_name_problem("a/b") is not None
    assert code_name_problem("-x") is not None and code_name_problem("x" * 129) is not None
    assert looks_like_prefix("0123abcd") and not looks_like_prefix("0123abc") and not looks_like_prefix("0123ABCD")
    assert default_name("/home/me/my code/") == "my-code"
    assert default_name("/x/deadbeef99") == "code-deadbeef99"
    assert default_name("/") == "code"
    assert code_name_problem(default_name("/home/me/.hidden")) is None


def test_human_size():
    assert [human_size(n) for n in (0, 1023, 1024, 5 * 1024 * 1024 + 1)] == ["0 B", "1023 B", "1.0 KiB", "5.0 MiB"]
