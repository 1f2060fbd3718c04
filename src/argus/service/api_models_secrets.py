"""The secrets' request and response bodies as Pydantic models (docs/api.md, Secrets).

Owns the body of `PUT /api/v2/secrets/{name}` (`SecretValue`) and the documented shape of the
answers of `argus.service.secret_service` (`SecretBody`, `SecretList`, `SecretDeleted`).
Invariants: an answer holds names and ISO times, never a value; the request body is checked on
its raw JSON value by `SecretValue.check` (as in `argus.service.api_models_requests`), whose
errors name the field and the reason and never quote the value; the value is a `SecretStr`, so
the model's repr hides it too.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr

from argus.domain.errors import Invalid
from argus.domain.secrets import MAX_VALUE_BYTES, NAME_RULE, secret_value_problem
from argus.service.api_models import ApiModel, IsoTime
from argus.service.api_models_requests import RequestBody

VALUE_BODY = 'the body must be {"value": "..."}'


class SecretValue(RequestBody):
    """`PUT /api/v2/secrets/{name}`: the secret's value (stored encrypted, never shown again)."""

    value: SecretStr = Field(
        description=f"UTF-8 text of 1 to {MAX_VALUE_BYTES} bytes, without NUL; write-only: no answer shows it",
        json_schema_extra={"writeOnly": True},
    )

    @classmethod
    def check(cls, data: object) -> dict[str, Any]:
        if not isinstance(data, dict) or set(data) - {"value"}:
            extra = sorted(set(data) - {"value"}) if isinstance(data, dict) else []
            problem = (str(extra[0]), "unknown key") if extra else ("<body>", "must be a JSON object")
            raise Invalid(VALUE_BODY, [problem])
        if "value" not in data or data["value"] is None:
            raise Invalid("value is required", [("value", "is required")])
        if why := secret_value_problem(data["value"]):
            raise Invalid("invalid value", [("value", why)])
        return {"value": data["value"]}


class SecretBody(ApiModel):
    """One secret: its name and times, never its value."""

    name: str = Field(description=f"an environment variable name: {NAME_RULE}", examples=["WANDB_API_KEY"])
    created_at: IsoTime
    updated_at: IsoTime


class SecretList(ApiModel):
    secrets: list[SecretBody] = Field(description="by name")


class SecretDeleted(ApiModel):
    name: str
    deleted: bool
