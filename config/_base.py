"""Building blocks every config section uses."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$",
        description="Identifier: lower-case letters, digits, '_', '.', '-'; at most 63 chars.",
    ),
]


# A Kubernetes object name (RFC 1123 label): namespaces, Secrets, PVCs.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class Strict(BaseModel):
    """A config section: unknown keys are errors, and a parsed config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config file that does not validate: names the file, the key path and what is allowed."""


def check_ordered(low: float, default: float, high: float) -> None:
    """Raise ValueError unless low <= default <= high."""
    if not low <= default <= high:
        raise ValueError(f"need min <= default <= max, got {low} <= {default} <= {high}")
