"""SSH to managed nodes (paramiko): connect with a key from the server's key directory, run a
command, get `(rc, stdout, stderr)`.

Owns `SSHConnector` (what the node service is given; it satisfies `argus.ports.SSHRunner`, its
sessions `argus.ports.SSHSession`), the records those ports speak in (`SSHTarget`,
`CommandResult`), and `SSHError`, the one exception every
failure becomes, with `kind` (`auth`, `unreachable`, `timeout`, `host_key`, `key`, `ssh`) and a
message that says what to fix:

- `authentication failed for root@10.0.0.5:22 with key gpu1.pem`;
- `cannot connect to 10.0.0.5:22: [Errno 111] Connection refused`;
- `cannot connect to 10.0.0.5:22: timed out after 10 s`.

Host keys: **accept and record on first contact** (trust on first use). The first key a host
presents is written to `<key_dir>/known_hosts`; from then on a different key for that host and
port is refused (`host_key`). Remove the host's line there after a node is legitimately
re-created. Keys are referenced by file name only (`key_ref`); agents, `~/.ssh` keys and
passwords are never used. Passphrase-protected keys are not supported.

Every network wait is bounded: the TCP connect, the SSH banner and the authentication each by
`connect_timeout_s`; a command by its own timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from argus.cluster.errors import ClusterError

MAX_OUTPUT_BYTES = 1024 * 1024
# paramiko's transport thread logs tracebacks of the failures that `connect` reports as an
# `SSHError` anyway (a refused banner, a failed key exchange): keep them out of the server log.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)
KNOWN_HOSTS = "known_hosts"
_known_hosts_lock = threading.Lock()


class SSHError(ClusterError):
    """An SSH connection or command failed; `kind` says how, the message says what to fix."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SSHTarget:
    host: str
    port: int
    user: str
    key_ref: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def key_path(key_dir: str | Path, key_ref: str) -> Path:
    """The key file a reference names; the reference must be a plain file name.

    Raises:
        SSHError: (`key`) the reference is not a plain file name.
    """
    if not key_ref or "/" in key_ref or "\\" in key_ref or key_ref in (".", ".."):
        raise SSHError("key", f"invalid key reference {key_ref!r}: a file name inside the key directory")
    return Path(key_dir).expanduser() / key_ref


class _RecordFirstKey(paramiko.MissingHostKeyPolicy):
    """Trust on first use: record the first key a host presents in the known_hosts file.

    The file is re-read under a lock before writing, so concurrent first contacts with different
    hosts all end up recorded, and a key recorded meanwhile by another connection is checked.
    """

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with _known_hosts_lock:
            keys = paramiko.HostKeys()
            if self.path.exists():
                keys.load(str(self.path))
            known = keys.lookup(hostname)
            if known is not None and key.get_name() in known:
                if known[key.get_name()] != key:
                    raise paramiko.BadHostKeyException(hostname, key, known[key.get_name()])
            else:
                keys.add(hostname, key.get_name(), key)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
                keys.save(str(tmp))
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
        client.get_host_keys().add(hostname, key.get_name(), key)


class _ParamikoSession:
    def __init__(self, client: paramiko.SSHClient, target: SSHTarget):
        self._client = client
        self._target = target

    def run(self, command: str, timeout_s: float = 30.0) -> CommandResult:
        """Run `command` with the remote user's shell.

        Returns:
            The exit code and the output (each capped at 1 MiB, decoded as UTF-8 with
            replacement).
        Raises:
            SSHError: (`timeout`) no exit within `timeout_s`; (`ssh`) the channel broke.
        """
        deadline = time.monotonic() + timeout_s
        try:
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                raise SSHError("ssh", f"the SSH connection to {self._target} is closed")
            chan = transport.open_session(timeout=timeout_s)
            try:
                chan.exec_command(command)
                out, err = bytearray(), bytearray()
                while True:
                    busy = False
                    if chan.recv_ready():
                        out += chan.recv(65536)[: max(0, MAX_OUTPUT_BYTES - len(out))] or b""
                        busy = True
                    if chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)[: max(0, MAX_OUTPUT_BYTES - len(err))] or b""
                        busy = True
                    if not busy and chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if time.monotonic() > deadline:
                        raise SSHError(
                            "timeout", f"the command on {self._target} did not finish within {timeout_s:g} s"
                        )
                    if not busy:
                        time.sleep(0.01)
                rc = chan.recv_exit_status()
            finally:
                chan.close()
        except SSHError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError("ssh", f"running a command on {self._target} failed: {exc}") from None
        return CommandResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> _ParamikoSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SSHConnector:
    """Opens SSH sessions with keys from `key_dir` (host keys recorded in `key_dir/known_hosts`)."""

    def __init__(self, key_dir: str | Path, connect_timeout_s: float = 10.0, known_hosts: str | Path | None = None):
        self.key_dir = Path(key_dir).expanduser()
        self.connect_timeout_s = float(connect_timeout_s)
        self.known_hosts = Path(known_hosts) if known_hosts else self.key_dir / KNOWN_HOSTS

    def load_key(self, key_ref: str) -> paramiko.PKey:
        """Raises: SSHError (`key`): missing, unreadable, encrypted or not a private key."""
        path = key_path(self.key_dir, key_ref)
        if not path.is_file():
            raise SSHError("key", f"no key file {key_ref} in the key directory {self.key_dir}")
        try:
            return paramiko.PKey.from_path(str(path))
        except paramiko.PasswordRequiredException:
            raise SSHError("key", f"key {key_ref} is passphrase-protected; use a key without one") from None
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise SSHError("key", f"cannot load key {key_ref}: {exc}") from None

    def connect(self, target: SSHTarget) -> _ParamikoSession:
        """An authenticated session to `target`.

        Raises:
            SSHError: `key`, `auth`, `unreachable`, `timeout`, `host_key` or `ssh`, each with a
                message naming the host, port, user and key reference as relevant.
        """
        pkey = self.load_key(target.key_ref)
        client = self._new_client()
        t = self.connect_timeout_s
        started = time.monotonic()
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                pkey=pkey,
                timeout=t,
                banner_timeout=t,
                auth_timeout=t,
                channel_timeout=t,
                allow_agent=False,
                look_for_keys=False,
            )
        except (paramiko.SSHException, OSError) as exc:
            client.close()
            raise self._connect_error(exc, target, started) from None
        return _ParamikoSession(client, target)

    def _new_client(self) -> paramiko.SSHClient:
        """A client that knows the recorded host keys and records a new host's first key."""
        client = paramiko.SSHClient()
        with _known_hosts_lock:
            if self.known_hosts.exists():
                client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(_RecordFirstKey(self.known_hosts))
        return client

    def _connect_error(self, exc: paramiko.SSHException | OSError, target: SSHTarget, started: float) -> SSHError:
        """The SSHError that a failed connect to `target` (begun at `started`) is reported as."""
        where = f"{target.host}:{target.port}"
        t = self.connect_timeout_s
        if isinstance(exc, paramiko.BadHostKeyException):
            return SSHError(
                "host_key",
                f"the host key of {where} is not the one recorded in "
                f"{self.known_hosts} (got {exc.key.get_name()} "
                f"{exc.key.fingerprint}); if the host was re-created, "
                f"remove its line there",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return SSHError("auth", f"authentication failed for {target} with key {target.key_ref}")
        if isinstance(exc, TimeoutError):
            return SSHError("timeout", f"cannot connect to {where}: timed out after {t:g} s")
        if isinstance(exc, paramiko.SSHException):
            return _handshake_error(str(exc).strip(), where, time.monotonic() - started, t)
        # refused, unreachable, unresolvable (NoValidConnectionsError too)
        return SSHError("unreachable", f"cannot connect to {where}: {_unreachable_reason(exc, target.host)}")


def _handshake_error(text: str, where: str, elapsed: float, t: float) -> SSHError:
    """The SSHError for an SSH-level failure: a timeout, no SSH server answering, or another."""
    if elapsed >= 0.9 * t or "timed out" in text.lower() or "timeout" in text.lower():
        return SSHError("timeout", f"cannot connect to {where}: no SSH answer within {t:g} s")
    if "banner" in text.lower() or "no existing session" in text.lower():
        return SSHError("unreachable", f"cannot connect to {where}: it did not answer as an SSH server ({text})")
    return SSHError("ssh", f"cannot connect to {where}: {text}")


def _unreachable_reason(exc: OSError, host: str) -> str:
    """Why a TCP connect failed, in words: refused, unreachable, or the name not resolved."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, socket.gaierror):
        why = f"cannot resolve {host} ({why})"
    elif isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        causes = {getattr(e, "strerror", None) or str(e) for e in exc.errors.values()}
        why = "; ".join(sorted(causes)) or str(exc)
    return why
