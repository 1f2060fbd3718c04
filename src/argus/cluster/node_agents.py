"""Starting and stopping a managed node's agent over SSH.

Owns the SSH conversations of the node lifecycle: the bring-up (connect, check the host, start
the agent detached and read its pid) and the stop (SIGTERM to the recorded pid, waiting for it
to exit). The scripts are
`argus.domain.nodes`'; every failure becomes `AgentError` with a reason fit for the node's
`reason` field. No state is kept here: the caller (`argus.scheduler.node_reconciler`) records
what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from argus.cluster.ssh import SSHError, SSHTarget
from argus.domain import nodes as rules
from argus.domain.node_records import Node
from argus.ports import SSHRunner
from argus.settings import ArgusSettings

COMMAND_TIMEOUT_S = 60.0


class AgentError(Exception):
    """The agent could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class Started:
    pid: int
    hostname: str
    log_path: str


def target(node: Node) -> SSHTarget:
    """Where the node's agent is reached over SSH."""
    return SSHTarget(node.host, node.port, node.ssh_user, node.key_ref)


class AgentOps:
    """The node agent's start and stop over SSH, as `settings.nodes` configures them."""

    def __init__(self, settings: ArgusSettings, connector: SSHRunner):
        self.settings = settings
        self.connector = connector

    def start(self, node: Node) -> Started:
        """Connect, check the host, and start the agent.

        Raises:
            AgentError: SSH (auth, connection, timeout, host key), the host check or the start
                failed; the message names which.
        """
        cfg = self.settings.nodes
        root = self.settings.nodes_shared_root
        name = node.name
        try:
            session = self.connector.connect(target(node))
            try:
                check = session.run(rules.check_script(cfg.agent_command, root), COMMAND_TIMEOUT_S)
                if check.rc != 0:
                    raise AgentError(rules.check_failure(check.rc, check.stderr, cfg.agent_command, root))
                hostname = next(
                    (line[5:].strip() for line in check.stdout.splitlines() if line.startswith("host=")), "?"
                )
                argv = rules.agent_command(cfg.agent_command, root, self.settings.cluster_name, node.registration())
                log_path = rules.agent_log_path(root, name)
                started = session.run(rules.start_script(argv, log_path), COMMAND_TIMEOUT_S)
            finally:
                session.close()
        except SSHError as exc:
            raise AgentError(exc.message) from None
        pid = started.stdout.strip().splitlines()[-1] if started.stdout.strip() else ""
        if started.rc != 0 or not pid.isdigit():
            detail = (started.stderr.strip() or started.stdout.strip() or "no output")[-300:]
            raise AgentError(f"starting the agent failed (exit {started.rc}): {detail}")
        return Started(int(pid), hostname, log_path)

    def stop(self, node: Node) -> str | None:
        """SIGTERM the node's recorded agent and wait for it to exit.

        Returns:
            None when it stopped (or was already gone, or none was recorded); else why it could
            not be stopped.
        """
        if not node.agent_pid:
            return None
        wait = self.settings.nodes.agent_stop_timeout_s
        try:
            session = self.connector.connect(target(node))
            try:
                res = session.run(rules.stop_script(node.agent_pid, node.name, wait), wait + COMMAND_TIMEOUT_S)
            finally:
                session.close()
        except SSHError as exc:
            return exc.message
        if res.rc != 0:
            return (res.stderr.strip() or res.stdout.strip() or f"exit {res.rc}")[-300:]
        return None
