"""Which weights a provider's replicas load, and fetching them once into its model cache.

Replicas never download: they run with `HF_HUB_OFFLINE=1` and load from the provider's cache
volume (`HF_HOME`), which one Job fills beforehand with exactly the pinned commits
(`models[].revision`, `models[].unet_revision`). `plan` lists what to fetch; `fetch` downloads
the hub items with `huggingface_hub` into the standard cache layout that `from_pretrained(repo,
revision=...)` and `hf_hub_download(..., revision=...)` then resolve offline. Tiny models
(`tiny://`) are built, not fetched (the CLI builds them into `$EASEL_CACHE` on the same volume);
local paths must already be on the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cluster.capacity import hosted_models
from config import EaselConfig, ProviderConfig, is_hub_id

__all__ = ["WeightItem", "WeightsError", "fetch", "plan", "unpinned"]

# A pipeline loads its components from subfolders named in model_index.json; a repository's
# root-level single-file checkpoints (e.g. FLUX.2-dev's 64 GB original-format file) and other
# frameworks' exports are never read, so they are not fetched.
_SNAPSHOT_ALLOW = ["model_index.json", "*/*"]
_SNAPSHOT_IGNORE = [
    "*.onnx",
    "*.onnx_data",
    "*.msgpack",
    "*.bin",
    "*.ckpt",
    "*.pb",
    "*.h5",
    "*openvino*",
]


class WeightsError(RuntimeError):
    """Weights that cannot be fetched or are not pinned."""


@dataclass(frozen=True)
class WeightItem:
    """One thing a model loads: a hub repository snapshot, one file of a hub repository, a tiny
    build or a local path."""

    model: str
    kind: Literal["snapshot", "file", "tiny", "local"]
    source: str  # repo id, tiny recipe or path
    revision: str | None = None
    filename: str | None = None  # for kind 'file'

    def describe(self) -> str:
        where = f"{self.source}/{self.filename}" if self.filename else self.source
        at = f"@{self.revision}" if self.revision else ""
        return f"{self.model}: {self.kind} {where}{at}"


def plan(cfg: EaselConfig, provider: ProviderConfig) -> list[WeightItem]:
    """What `provider`'s replicas load, model by model (its diffusers models only)."""
    items = []
    for m in hosted_models(cfg, provider):
        assert m.weights is not None  # a diffusers model always has weights
        if m.tiny_recipe is not None:
            items.append(WeightItem(m.name, "tiny", m.tiny_recipe))
        elif is_hub_id(m.weights):
            items.append(WeightItem(m.name, "snapshot", m.weights, m.revision))
        else:
            items.append(WeightItem(m.name, "local", m.weights))
        if m.unet:
            items.append(_unet_item(m.name, m.unet, m.unet_revision))
    return items


def unpinned(items: Iterable[WeightItem]) -> list[WeightItem]:
    """Hub items without a pinned commit (replicas loading offline need one)."""
    return [i for i in items if i.kind in ("snapshot", "file") and not i.revision]


def fetch(
    items: Iterable[WeightItem],
    hub_cache: str | Path,
    *,
    token: str | None = None,
    snapshot_download: Callable[..., Any] | None = None,
    hf_hub_download: Callable[..., Any] | None = None,
) -> list[Path]:
    """Download every hub item at its pinned revision into `hub_cache` (`$HF_HOME/hub`).

    Args:
        token: the Hugging Face token (gated checkpoints such as FLUX.2-dev need one).
        snapshot_download, hf_hub_download: the downloaders (default: huggingface_hub's).

    Returns:
        The local snapshot folder or file of each hub item, in order.

    Raises:
        WeightsError: an unpinned hub item (nothing is downloaded then).
    """
    items = list(items)
    loose = unpinned(items)
    if loose:
        raise WeightsError(
            "unpinned hub weights: "
            + "; ".join(i.describe() for i in loose)
            + " (set models[].revision / unet_revision to a commit)"
        )
    if snapshot_download is None or hf_hub_download is None:
        import huggingface_hub

        snapshot_download = snapshot_download or huggingface_hub.snapshot_download
        hf_hub_download = hf_hub_download or huggingface_hub.hf_hub_download
    out = []
    for item in items:
        if item.kind == "snapshot":
            path = snapshot_download(
                repo_id=item.source,
                revision=item.revision,
                cache_dir=str(hub_cache),
                token=token,
                allow_patterns=_SNAPSHOT_ALLOW,
                ignore_patterns=_SNAPSHOT_IGNORE,
            )
        elif item.kind == "file":
            path = hf_hub_download(
                repo_id=item.source,
                filename=item.filename,
                revision=item.revision,
                cache_dir=str(hub_cache),
                token=token,
            )
        else:
            continue
        out.append(Path(path))
    return out


def _unet_item(model: str, spec: str, revision: str | None) -> WeightItem:
    if not is_hub_id(spec):
        return WeightItem(model, "local", spec)
    parts = spec.split("/")
    if spec.endswith(".safetensors") and len(parts) >= 3:
        return WeightItem(model, "file", "/".join(parts[:2]), revision, "/".join(parts[2:]))
    return WeightItem(model, "snapshot", spec, revision)
