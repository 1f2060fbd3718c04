"""The head's record on shared storage is acted on only from the machine that started it."""

from __future__ import annotations

import json

import pytest

from argus.cluster import head
from argus.cluster.errors import ClusterError


def record(root, host: str) -> None:
    rec = head.HeadRecord(
        str(root),
        "prod",
        "10.0.0.1",
        6380,
        8265,
        "/tmp/argus-ray-x",
        30.0,
        5.0,
        head_pid=1,
        publisher_pid=1,
        host=host,
    )
    path = head.state_file(str(root), "prod")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rec.to_json())


@pytest.mark.parametrize(
    "act",
    [
        lambda root: head.stop(str(root), "prod"),
        lambda root: head.start(str(root), "prod", port=6381, node_ip="127.0.0.1"),
    ],
)
def test_another_machines_head_is_neither_stopped_nor_replaced_from_here(tmp_path, act):
    record(tmp_path.resolve(), "gpu-head-elsewhere")
    with pytest.raises(ClusterError) as info:
        act(tmp_path)
    assert "was started on gpu-head-elsewhere, not on this machine" in str(info.value)
    # Nothing was touched: the record is still there, head.json was not marked stopped.
    assert json.loads(head.state_file(str(tmp_path.resolve()), "prod").read_text())["host"] == "gpu-head-elsewhere"
    assert not (tmp_path / "ray" / "discovery" / "prod" / "head.json").exists()
