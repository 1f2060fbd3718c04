"""SQLite transactions run in one C call that keeps the interpreter lock.

Owns `DirectConnection`: a second connection to a SQLite database file, opened through the very
libsqlite3 that Python's `sqlite3` module has loaded, whose `run(script)` runs a whole
transaction (`BEGIN IMMEDIATE; …; COMMIT`) in one `sqlite3_exec` call made through
`ctypes.PyDLL`, so without letting go of the interpreter lock. Python's `sqlite3` lets go of it
around every statement; while the database's write lock is held (every other process's writers
waiting) and another thread of the process is running Python, getting it back costs up to a
switch interval (5 ms) each time: under load an insert of a tenth of a millisecond of SQLite
held the write lock 1.6 to 2 ms. Through `run` the process's other threads wait that tenth of a
millisecond instead (a script is kept to `MAX_SCRIPT_ROWS` rows and `MAX_SCRIPT_BYTES`,
about a millisecond, unless the connection checkpoints at its commit: `wal_autocheckpoint`, off
in the server), and other processes' writers no longer wait on those hand-overs (they still do
when this thread found the lock taken: it gets the interpreter back holding it).

Also owns `sql_rows`: rows as the literal rows of a multi-row `VALUES`, written so that SQLite
stores exactly what binding them through the sqlite3 module would (binding each value through
ctypes would cost a call a value).

The caller holds the write engine's connection while it calls `run` (the process's turn), and
the lock across processes (`db.WriteLock`) around the call alone, so this connection meets no
other writer. Its busy timeout is 0, so a writer that does not take that lock (the sqlite3
shell) makes `run` fail at once with SQLITE_BUSY rather than stall the process; the caller then
writes the usual way.

`DirectConnection.open` gives None where this cannot be done safely: the functions cannot be
found through the `sqlite3` module's own extension (the lookup starts there so that it reaches
the very copy of SQLite the module uses: two copies in one process break each other's POSIX
locks), SQLite is older than 3.8.8, or the path is `:memory:` or a `file:` URI.
"""

from __future__ import annotations

import _sqlite3
import ctypes
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("argus.store")

SQLITE_OK = 0
SQLITE_BUSY = 5
SQLITE_CONSTRAINT = 19
SQLITE_MISUSE = 21
_OPEN_READWRITE = 0x2
_MIN_VERSION = 3_008_008  # multi-row VALUES free of the compound-select limit
_INT64 = (-(2**63), 2**63)
_EXACT = 2**53  # integers up to this are exact in a double
_MAX_DENOMINATOR = 2**62  # still an exact integer literal, and a double
# The most rows (about 20 µs of SQLite each) and bytes of one script: the call holds the
# interpreter lock throughout.
MAX_SCRIPT_ROWS = 64
MAX_SCRIPT_BYTES = 256 * 1024


class DirectError(Exception):
    """`run` failed; the transaction was rolled back.

    Attributes:
        code: SQLite's primary result code (SQLITE_CONSTRAINT, SQLITE_BUSY, …).
    """

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _module_library() -> Any:
    """The SQLite that the `sqlite3` module itself calls, through `ctypes.PyDLL`: looked up from
    the module's own extension, so symbols resolve as its own calls do (the very library it
    linked, or its own copy when that copy's symbols are exported). None when they cannot be."""
    try:
        lib = ctypes.PyDLL(_sqlite3.__file__)
        lib.sqlite3_exec  # noqa: B018 - found, or AttributeError
    except (OSError, AttributeError):
        return None
    return lib


_lib: Any = None
_lib_guard = threading.Lock()


def _load() -> Any:
    """The shared libsqlite3 through `ctypes.PyDLL` (calls keep the interpreter lock), with the
    signatures used here; None when it cannot be used (see the module docstring)."""
    global _lib
    with _lib_guard:
        if _lib is None:
            _lib = False
            lib = _module_library()
            if lib is None:
                log.info("the sqlite3 module's SQLite cannot be reached through ctypes: inserts use the module")
                return None
            lib.sqlite3_libversion_number.restype = ctypes.c_int
            if lib.sqlite3_libversion_number() < _MIN_VERSION or lib.sqlite3_threadsafe() == 0:
                return None
            vp, cp = ctypes.c_void_p, ctypes.c_char_p
            lib.sqlite3_open_v2.argtypes = [cp, ctypes.POINTER(vp), ctypes.c_int, cp]
            lib.sqlite3_open_v2.restype = ctypes.c_int
            lib.sqlite3_exec.argtypes = [vp, cp, vp, vp, ctypes.POINTER(vp)]
            lib.sqlite3_exec.restype = ctypes.c_int
            lib.sqlite3_free.argtypes = [vp]
            lib.sqlite3_free.restype = None
            lib.sqlite3_get_autocommit.argtypes = [vp]
            lib.sqlite3_get_autocommit.restype = ctypes.c_int
            lib.sqlite3_close_v2.argtypes = [vp]
            lib.sqlite3_close_v2.restype = ctypes.c_int
            lib.sqlite3_errmsg.argtypes = [vp]
            lib.sqlite3_errmsg.restype = cp
            _lib = lib
        return _lib or None


class DirectConnection:
    """One SQLite connection whose transactions run in a single call holding the interpreter
    lock. Thread-safe (one `run` at a time)."""

    def __init__(self, lib: Any, handle: ctypes.c_void_p, path: str):
        self._lib = lib
        self._handle: ctypes.c_void_p | None = handle
        self.path = path
        self._guard = threading.Lock()

    @classmethod
    def open(cls, path: str, pragmas: Sequence[str] = ()) -> DirectConnection | None:
        """Open `path` (it must exist) and run `pragmas` (each `name=value`) on it; busy timeout
        0. None where this module cannot be used (see its docstring).

        Raises:
            DirectError: SQLite could not open the file.
        """
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        lib = _load()
        if lib is None:
            return None
        handle = ctypes.c_void_p()
        rc = lib.sqlite3_open_v2(os.fsencode(path), ctypes.byref(handle), _OPEN_READWRITE, None)
        if rc != SQLITE_OK:
            message = (lib.sqlite3_errmsg(handle) or b"").decode(errors="replace") if handle else ""
            lib.sqlite3_close_v2(handle)
            raise DirectError(rc, f"cannot open {path}: {message or rc}")
        conn = cls(lib, handle, path)
        try:
            conn.run(";".join([f"PRAGMA {p}" for p in (*pragmas, "busy_timeout=0")]).encode())
        except DirectError:
            conn.close()
            raise
        return conn

    def run(self, script: bytes) -> None:
        """Run `script` (UTF-8 SQL, `;`-separated) in one call. When a statement fails, the
        ones after it do not run and an open transaction is rolled back; when even that fails,
        the connection is closed (which ends the transaction) and later calls fail.

        Raises:
            DirectError: a statement failed (its code and SQLite's message).
        """
        with self._guard:
            if self._handle is None:
                raise DirectError(SQLITE_MISUSE, "the connection is closed")
            error = ctypes.c_void_p()
            rc = self._lib.sqlite3_exec(self._handle, script, None, None, ctypes.byref(error))
            if rc == SQLITE_OK:
                return
            message = ctypes.string_at(error.value).decode(errors="replace") if error.value else str(rc)
            self._lib.sqlite3_free(error)
            if not self._lib.sqlite3_get_autocommit(self._handle):
                self._lib.sqlite3_exec(self._handle, b"ROLLBACK", None, None, None)
                if not self._lib.sqlite3_get_autocommit(self._handle):  # SQLite's write lock must go
                    handle, self._handle = self._handle, None
                    self._lib.sqlite3_close_v2(handle)
                    message += "; the rollback failed too, and the connection is closed"
            raise DirectError(rc & 0xFF, message)

    def close(self) -> None:
        with self._guard:
            handle, self._handle = self._handle, None
        if handle is not None:
            self._lib.sqlite3_close_v2(handle)


def sql_rows(
    rows: Sequence[Sequence[Any]], max_chars: int = MAX_SCRIPT_BYTES, max_rows: int = MAX_SCRIPT_ROWS
) -> str | None:
    """`rows` as the literal rows of a `VALUES` clause, `(…),(…)`, each value as SQLite stores
    the same value bound by the sqlite3 module; None when one cannot be written so, or when there
    are more than `max_rows` rows or `max_chars` characters of strings (a cheap first bound on
    the script's size, checked exactly once it is encoded; a script that big would hold the
    interpreter lock for milliseconds: such batches are better written the usual way).

    A string is quoted with its quotes doubled, the only escape SQLite's string literals have; one
    with a NUL is refused (SQLite's literal would end there). A float is written as the exact
    quotient of two integers (`(m.0/2**k)`, both exact in a double, so the division is exact):
    SQLite's decimal parser is not correctly rounded, and `repr` read back by it missed about one
    float in 10,000 of ordinary magnitudes (SQLite 3.40), more among extreme ones. Refused: floats
    that are not finite, -0.0 (its literal would lose the sign), floats that need a larger power
    of two, ints out of 64 bits, and any type but str, int, float, bool and None.
    """
    if len(rows) > max_rows:
        return None
    out = []
    size = 0
    for row in rows:
        values = []
        for value in row:
            kind = type(value)
            if kind is str:
                if "\x00" in value:
                    return None
                size += len(value)
                if size > max_chars:
                    return None
                values.append("'" + value.replace("'", "''") + "'")
            elif kind is bool:
                values.append("1" if value else "0")
            elif kind is int:
                if not _INT64[0] <= value < _INT64[1]:
                    return None
                values.append(str(value))
            elif kind is float:
                literal = _float(value)
                if literal is None:
                    return None
                values.append(literal)
            elif value is None:
                values.append("NULL")
            else:
                return None
        out.append("(" + ",".join(values) + ")")
    return ",".join(out)


def _float(value: float) -> str | None:
    if not math.isfinite(value) or (value == 0.0 and math.copysign(1.0, value) < 0):
        return None
    numerator, denominator = value.as_integer_ratio()  # denominator: a power of two
    if abs(numerator) >= _EXACT or denominator > _MAX_DENOMINATOR:
        return None
    return f"{numerator}.0" if denominator == 1 else f"({numerator}.0/{denominator})"


def integrity_error(message: str) -> sqlite3.IntegrityError:
    """The `sqlite3` module's exception for a constraint that `run` reported."""
    return sqlite3.IntegrityError(message)
