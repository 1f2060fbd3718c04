"""What the API processes of one server share on one machine: the submission buckets and the
generation of the token memory.

Owns a small file mapped with `mmap`: `SharedState.create` makes it (mode 0600, in the private
directory the server makes) before the API processes start, and each of them `open`s it. In it:

- a 64-bit generation, bumped by every `Authenticator.forget` of any process and read (a plain
  read, no lock) on every authenticated request, so a change to a user made through one process
  drops the token memory of all;
- a fixed table of token buckets, one per user, so the per-user submission rate is one budget
  across the processes instead of one per process. The arithmetic is `argus.service.ratelimit`'s
  (`refill`, `spend`); `take_token` means exactly what `RateLimiter.wait_s` means.

Invariants: every read-modify-write holds `flock(LOCK_EX)` on the file (between processes) and
a `threading.Lock` (between the threads of one process: a flock is per open file description).
The table is open addressing over a 64-bit hash of the user id (0 marks an empty slot) with a
probe of `PROBE` slots. A slot is never emptied, so a probe stops at the first empty one; when
none in the probe is empty or the user's, the slot whose bucket would be fullest by now goes to
the newcomer, who starts with a full bucket: exact when that bucket is full (a full bucket and a
forgotten one are the same), otherwise its user is forgiven what they owed. Two users whose
hashes collide share a bucket (1 in 2^64 a pair).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from argus.service.ratelimit import refill, spend

MAGIC = b"ARGUSST1"
SLOTS = 8192  # buckets kept
PROBE = 16  # slots a user's bucket may be in, from the one its hash names
_U64 = struct.Struct("<Q")
_SLOT = struct.Struct("<Qdd")  # key (0: empty), tokens, at
_MAGIC_AT = 8  # the generation is the u64 at 0; the slots start at _HEADER
_HEADER = 64
SIZE = _HEADER + SLOTS * _SLOT.size

PathLike = str | os.PathLike[str]


def user_key(user: str) -> int:
    """The 64-bit key of `user`'s bucket: never 0 (an empty slot)."""
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "little") or 1


class SharedState:
    """The mapped file; `create` or `open` one, `close` it when done (also a context manager)."""

    def __init__(self, fd: int, mm: mmap.mmap) -> None:
        self._fd = fd
        self._mm = mm
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: PathLike) -> SharedState:
        """Make the file at `path` (which must not exist), zeroed: generation 0, no buckets."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            mm = mmap.mmap(fd, SIZE)
        except BaseException:
            os.close(fd)
            raise
        mm[_MAGIC_AT : _MAGIC_AT + len(MAGIC)] = MAGIC
        return cls(fd, mm)

    @classmethod
    def open(cls, path: PathLike) -> SharedState:
        """Map the file `create` made at `path`.

        Raises:
            ValueError: the file is not one `create` made (wrong size or no magic).
        """
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            if os.fstat(fd).st_size != SIZE:
                raise ValueError(f"{os.fspath(path)} is not a shared state file: {SIZE} bytes expected")
            mm = mmap.mmap(fd, SIZE)
        except BaseException:
            os.close(fd)
            raise
        if mm[_MAGIC_AT : _MAGIC_AT + len(MAGIC)] != MAGIC:
            mm.close()
            os.close(fd)
            raise ValueError(f"{os.fspath(path)} is not a shared state file: no {MAGIC!r}")
        return cls(fd, mm)

    def close(self) -> None:
        if not self._mm.closed:
            self._mm.close()
            os.close(self._fd)

    def __enter__(self) -> SharedState:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def _locked(self) -> Iterator[mmap.mmap]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield self._mm
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def generation(self) -> int:
        """The generation: how many `bump`s there were. A plain read of an aligned word, no lock."""
        return int(_U64.unpack_from(self._mm, 0)[0])

    def bump(self) -> int:
        """Add one to the generation. Returns: the new generation."""
        with self._locked() as mm:
            generation = int(_U64.unpack_from(mm, 0)[0]) + 1
            _U64.pack_into(mm, 0, generation)
            return generation

    def take_token(self, user: str, rate_per_s: float, burst: int, now: float) -> float:
        """Take one token of `user`'s bucket (`RateLimiter.wait_s` shared: a new user's is full).

        Args:
            now: monotonic seconds, the same clock in every process (`time.monotonic`).

        Returns:
            0.0 when a token was taken, else the seconds until one is there (none is taken).
        """
        key = user_key(user)
        home = key % SLOTS
        with self._locked() as mm:
            slot, fullest, found = -1, float("-inf"), False
            for i in range(PROBE):
                offset = _HEADER + (home + i) % SLOTS * _SLOT.size
                held, tokens, at = _SLOT.unpack_from(mm, offset)
                if held == key or held == 0:
                    slot, found = offset, held == key
                    break
                level = refill(tokens, at, now, rate_per_s, burst)
                if level > fullest:
                    slot, fullest = offset, level
            if not found:
                tokens, at = float(burst), now
            tokens, at, wait = spend(tokens, at, now, rate_per_s, burst)
            _SLOT.pack_into(mm, slot, key, tokens, at)
            return wait
