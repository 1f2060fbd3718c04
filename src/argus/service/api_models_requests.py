"""The API's JSON request bodies as Pydantic models (docs/api.md): what each route takes.

Owns the bodies of `POST /api/v2/users`, `:priority`, node registration and the optional
`{"reason"}` of a node's `:drain` and `:offline` (a TaskSpec is YAML text: not here). The routes
declare them as FastAPI bodies, so `/openapi.json` shows their schema and no route looks at a raw
body.

Invariants: each model checks the raw JSON value itself (`check`), with the API's own wording,
before Pydantic's field validation; a body that fails raises `argus.domain.errors.Invalid`,
which is not a `ValueError`, so Pydantic lets it through to the error handler: a 400
`{"error", "message", "problems"}` whose message and problems (`field`, `message`) are the
route's own, as before. A missing (or `null`) body is checked too (`check(None)`): the routes
declare the body with `validate_default=True` and `NO_BODY`, so the model, not FastAPI, says what
an absent body means.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator

from argus.domain import nodes as rules
from argus.domain.errors import Invalid
from argus.domain.users import new_user_id_problem

# The default of a body parameter: validated like a body (`Body(validate_default=True)`), so the
# model's `check(None)` decides whether a missing body is allowed.
NO_BODY: Any = None

MAX_REASON = 500
USER_BODY = 'the body must be {"user_id": ...}'
PRIORITY_BODY = 'the body must be {"priority": <0-1000>}'
REASON_BODY = 'the body must be empty or {"reason": "..."}'
INVALID_REGISTRATION = "the node registration is invalid"


class RequestBody(BaseModel):
    """Base of the request bodies: `check` turns the raw JSON value into field values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # OpenAPI: whether a request must carry the body (FastAPI sees a default and would say not).
    required: ClassVar[bool] = True

    @model_validator(mode="wrap")
    @classmethod
    def _checked(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if isinstance(data, cls):
            return data
        return handler(cls.check(data))

    @classmethod
    def check(cls, data: object) -> dict[str, Any]:
        """The field values of a valid body.

        Args:
            data: the parsed JSON body; None when there is none; bytes when it was not JSON.
        Raises:
            Invalid: naming the field at fault, in the API's words.
        """
        raise NotImplementedError

    @classmethod
    def openapi(cls) -> dict[str, Any]:
        """The route's `openapi_extra`: the body's requiredness, which FastAPI cannot infer."""
        return {"requestBody": {"required": cls.required}}


class UserCreate(RequestBody):
    """`POST /api/v2/users`."""

    user_id: str = Field(
        description="lower-case letters, digits and `_`, starting with a letter, at most 32; `admin` is reserved",
        examples=["alice"],
    )

    @classmethod
    def check(cls, data: object) -> dict[str, Any]:
        if not isinstance(data, dict) or set(data) - {"user_id"}:
            extra = sorted(set(data) - {"user_id"}) if isinstance(data, dict) else []
            problem = (extra[0], "unknown key") if extra else ("<body>", "must be a JSON object")
            raise Invalid(USER_BODY, [problem])
        user_id = data.get("user_id")
        if user_id is None:
            raise Invalid("user_id is required", [("user_id", "is required")])
        if why := new_user_id_problem(user_id):
            raise Invalid("invalid user_id", [("user_id", why)])
        return {"user_id": user_id}


class PriorityChange(RequestBody):
    """`POST /api/v2/tasks/{task_id}:priority` (admin)."""

    priority: int = Field(ge=0, le=1000, description="higher runs first; a user's own tasks go up to 500")

    @classmethod
    def check(cls, data: object) -> dict[str, Any]:
        if not isinstance(data, dict) or set(data) != {"priority"}:
            raise Invalid(PRIORITY_BODY, [("priority", "is required, alone, as a JSON object key")])
        priority = data["priority"]
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 1000:
            raise Invalid("invalid priority", [("priority", "must be an integer from 0 to 1000")])
        return {"priority": priority}


class NodeReason(RequestBody):
    """The optional body of a node's `:drain` and `:offline`: the reason kept in its event."""

    required: ClassVar[bool] = False
    reason: str | None = Field(None, min_length=1, max_length=MAX_REASON, examples=["disk swap"])

    @classmethod
    def check(cls, data: object) -> dict[str, Any]:
        if data is None:
            return {"reason": None}
        if not isinstance(data, dict) or set(data) - {"reason"}:
            raise Invalid(REASON_BODY, [("reason", "the only key allowed")])
        value = data.get("reason")
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON):
            raise Invalid("invalid reason", [("reason", f"must be text of 1-{MAX_REASON} characters")])
        return {"reason": value.strip() if value is not None else None}


class NodeRegistrationBody(RequestBody):
    """`POST /api/v2/nodes` (admin): checked by `argus.domain.nodes.parse_registration`, every
    problem at once."""

    name: str = Field(description="a DNS label: `a-z`, `0-9`, `-`, at most 63", examples=["gpu-1"])
    host: str = Field(description="a host name or an IP address", examples=["10.0.0.5"])
    port: int = Field(rules.DEFAULT_SSH_PORT, ge=1, le=65535)
    user: str = Field(description="the SSH user", examples=["root"])
    key: str = Field(description="the name of a private key file in the server's `nodes.key_dir`")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Ray node labels; `ray.io/*` and `argus.io/node` are reserved, `pool` puts the node in a pool",
    )
    gpus: int | None = Field(None, ge=0, le=1024, description="left out: Ray detects them")
    cpus: int | None = Field(None, ge=1, le=4096, description="left out: Ray detects them")

    @classmethod
    def check(cls, data: object) -> dict[str, Any]:
        try:
            reg = rules.parse_registration(data)
        except rules.RegistrationError as exc:
            raise Invalid(INVALID_REGISTRATION, exc.problems) from None
        return {
            "name": reg.name,
            "host": reg.host,
            "port": reg.port,
            "user": reg.user,
            "key": reg.key,
            "labels": reg.labels,
            "gpus": reg.gpus,
            "cpus": reg.cpus,
        }
