"""The live routing settings as one document, and how every gateway process gets the newest.

A `RoutingDocument` (policy, per-model weights and drains, a version) is what `PUT
/v1/admin/routing` changes: the change is turned into a whole new document (`updated`), which
every process applies in place (`RoutingTable.apply`), as Serve applies a new `user_config` with
`reconfigure`. Nothing on the request path reads it from anywhere: each process holds its copy.

How the new document reaches the other processes of one `easel gateway --workers N`: the process
that took the PUT writes it to a file in the gateway's state folder (`DocumentStore`, under an
exclusive lock, version + 1), and every process checks that file's version off the request path
a few times a second. Without a state folder (one process) the store is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DocumentStore", "RoutingDocument", "updated"]


class RoutingDocument(BaseModel):
    """Policy, weights and drains: every live routing setting, as one object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=0, ge=0, description="Grows by one with every change.")
    updated_s: float = Field(default=0.0, description="Wall time of the change.")
    policy: str
    weights: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="model -> provider -> weight (others: the config's)."
    )
    drained: dict[str, list[str]] = Field(
        default_factory=dict, description="model -> providers taking no new requests."
    )


def updated(
    doc: RoutingDocument,
    known: dict[str, list[str]],
    *,
    policies: list[str],
    policy: str | None = None,
    weights: dict[str, float] | None = None,
    drain: list[str] | None = None,
    undrain: list[str] | None = None,
    model: str | None = None,
) -> RoutingDocument:
    """`doc` with one admin change applied; nothing changes on bad input.

    Args:
        known: model -> its providers.
        policies: the registered policy names.
        model: limits weights and drains to one model (the policy is global).

    Raises:
        LookupError: an unknown model.
        ValueError: anything else wrong, saying what is allowed.
    """
    if model is not None and model not in known:
        raise LookupError(f"unknown model {model!r} (known: {sorted(known)})")
    if policy is not None and policy not in policies:
        raise ValueError(f"policy: unknown {policy!r} (allowed: {policies})")
    if policy is not None and model is not None:
        raise ValueError("policy applies to every model; leave out `model` to change it")
    models = [model] if model is not None else list(known)
    serving = {p for m in models for p in known[m]}
    for key, names in (("weights", list(weights or {})), ("drain", drain or []),
                       ("undrain", undrain or [])):  # fmt: skip
        unknown = sorted(set(names) - serving)
        if unknown:
            scope = f"model {model!r}" if model else "any model"
            raise ValueError(
                f"{key}: providers {unknown} do not serve {scope} (known: {sorted(serving)})"
            )
    for p, w in (weights or {}).items():
        if not isinstance(w, int | float) or w < 0 or w != w:
            raise ValueError(f"weights: {p}={w!r} must be a number >= 0")
    overlap = set(drain or []) & set(undrain or [])
    if overlap:
        raise ValueError(f"providers {sorted(overlap)} are in both drain and undrain")
    new_weights = {m: dict(ws) for m, ws in doc.weights.items()}
    new_drained = {m: set(ps) for m, ps in doc.drained.items()}
    for m in models:
        for p in known[m]:
            if weights and p in weights:
                new_weights.setdefault(m, {})[p] = float(weights[p])
            if drain and p in drain:
                new_drained.setdefault(m, set()).add(p)
            if undrain and p in undrain:
                new_drained.setdefault(m, set()).discard(p)
    return RoutingDocument(
        version=doc.version + 1,
        updated_s=time.time(),
        policy=policy or doc.policy,
        weights=new_weights,
        drained={m: sorted(ps) for m, ps in new_drained.items() if ps},
    )


class DocumentStore:
    """The newest routing document, shared by the gateway processes of one host through a file.

    Args:
        folder: the gateway's state folder; None: one process, nothing to share.
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.path = None if folder is None else Path(folder) / "routing.json"
        self._mtime_ns = -1

    def newer(self, than: int) -> RoutingDocument | None:
        """The stored document if its version is above `than` (cheap when the file is unchanged)."""
        if self.path is None:
            return None
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime == self._mtime_ns:
            return None
        doc = self._read()
        if doc is None:
            return None
        self._mtime_ns = mtime
        return doc if doc.version > than else None

    def change(self, current: RoutingDocument, make: Any) -> RoutingDocument:
        """Apply `make(newest) -> new document` under the store's lock, store and return it.

        The newest is the stored one when it is ahead of `current` (another process changed it
        first), so concurrent PUTs to different processes never lose each other's change.
        """
        if self.path is None:
            return make(current)
        with self._locked():
            stored = self._read()
            base = stored if stored is not None and stored.version > current.version else current
            new = make(base)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(new.model_dump_json())
            tmp.replace(self.path)  # readers see the old file or the new one, never half
        return new

    def _read(self) -> RoutingDocument | None:
        try:
            return RoutingDocument.model_validate(json.loads(self.path.read_text()))  # type: ignore[union-attr]
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def _locked(self):  # type: ignore[no-untyped-def]
        assert self.path is not None
        with open(self.path.with_suffix(".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
