"""The code snapshots' response bodies as Pydantic models (docs/api.md, Code).

Owns the documented shape of `argus.service.code_service`'s bodies: a snapshot, a push's answer,
the listing and a deletion. Same invariants as `argus.service.api_models`: exactly the keys the
service builds, in its order, with the same nullability.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from argus.service.api_models import ApiModel, IsoTime


def _sha256() -> Any:
    return Field(description="the manifest hash of the snapshot's files: its id", pattern="^[0-9a-f]{64}$")


class CodeSnapshotBody(ApiModel):
    """One of the caller's snapshots: read-only files under `path`."""

    sha256: str = _sha256()
    name: str = Field(description="the name it was last pushed under; a name means its newest snapshot")
    path: str = Field(description="`<shared_root>/users/<user>/code/<sha256>`")
    size_bytes: int = Field(description="the files' total size")
    files: int = Field(description="files and symlinks")
    created_at: IsoTime
    updated_at: IsoTime = Field(description="its last push")
    tasks: list[str] = Field(description="the tasks recorded as using it, oldest first")


class CodePushAnswer(ApiModel):
    """A push: the snapshot, whether the caller had this content already, and what was uploaded."""

    sha256: str = _sha256()
    name: str
    path: str
    size_bytes: int
    files: int
    created_at: IsoTime
    updated_at: IsoTime
    unchanged: bool = Field(description="the caller had a snapshot of exactly this content already")
    bytes_uploaded: int = Field(description="the archive's size; 0 when pushed again by hash")


class CodeList(ApiModel):
    snapshots: list[CodeSnapshotBody] = Field(description="most recently pushed first")


class CodeDeleted(ApiModel):
    sha256: str = _sha256()
    name: str
    deleted: Literal[True]
