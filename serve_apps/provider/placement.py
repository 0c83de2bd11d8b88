"""Where a multi-GPU model's components go: the placement plan the diffusers loader follows.

A replica with `num_gpus > 1` (FLUX.2-dev: a ~64 GB transformer and a ~48 GB text encoder in
bf16, more than one 80 GB GPU holds) must spread its components over its GPUs; one
`pipe.to("cuda")` would put all of them on the first. The loader asks diffusers for its
`device_map="balanced"` placement with a per-GPU memory budget (`max_memory`) that leaves room for
activations, after `plan_placement` has computed, from the checkpoint's own files, where that
strategy will put each component, and refused a model that does not fit. (Where a component
does not fit the GPU whose turn it is, diffusers silently offloads it to the CPU; here that is
an error that names the component, its size and the budget.) `check_loaded` then compares the
pipeline's `hf_device_map` with the plan.

Pure apart from `plan_for` and `check_loaded`, which look at CUDA and the pipeline: no torch at
import time, so the plan is testable on any CPU.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIVATION_RESERVE",
    "Placement",
    "PlacementError",
    "check_loaded",
    "component_sizes",
    "gpus_for",
    "plan_for",
    "plan_placement",
]

# Share of each GPU's memory left for activations, the CUDA context and the allocator's slack.
ACTIVATION_RESERVE = 0.15
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class PlacementError(ValueError):
    """The model's components do not fit its GPUs as asked; says which and by how much."""


@dataclass(frozen=True)
class Placement:
    """Component -> GPU index, each GPU's budget in bytes, and the sizes it was planned from."""

    device_map: dict[str, int]
    max_memory: dict[int, int]
    sizes: dict[str, int]

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """What `DiffusionPipeline.from_pretrained` takes to follow this plan."""
        return {"device_map": "balanced", "max_memory": dict(self.max_memory)}

    def used(self) -> dict[int, int]:
        """Bytes of weights planned per GPU."""
        out = dict.fromkeys(self.max_memory, 0)
        for name, gpu in self.device_map.items():
            out[gpu] += self.sizes[name]
        return out


def plan_placement(
    sizes: Mapping[str, int], gpu_memory: Sequence[int], reserve: float = ACTIVATION_RESERVE
) -> Placement:
    """Where diffusers' 'balanced' strategy puts each component, or PlacementError.

    The strategy: components largest first, GPUs (largest first) taken in the order 0, 1, ...,
    n-1, n-1, ..., 0 and around again, each component on the GPU whose turn it is, the turn
    passing only when a component lands.

    Args:
        sizes: bytes of each component's weights at the dtype it loads in.
        gpu_memory: each GPU's total memory in bytes, in device order.
        reserve: share of each GPU kept free for activations.
    """
    if not gpu_memory:
        raise PlacementError("no GPU to place the model on")
    if not 0 <= reserve < 1:
        raise ValueError(f"reserve must be in [0, 1), got {reserve}")
    budget = {i: int(m * (1 - reserve)) for i, m in enumerate(gpu_memory)}
    order = sorted(budget, key=lambda i: -budget[i])
    cycle = order + order[::-1]
    free = dict(budget)
    device_map: dict[str, int] = {}
    # The turn passes only when a component lands (here: always, or the plan is refused).
    for turn, (name, size) in enumerate(sorted(sizes.items(), key=lambda kv: -kv[1])):
        gpu = cycle[turn % len(cycle)]
        if size > free[gpu]:
            raise PlacementError(
                f"component {name!r} ({_gb(size)}) does not fit GPU {gpu}'s remaining budget "
                f"({_gb(free[gpu])} of {_gb(budget[gpu])}: {1 - reserve:.0%} of "
                f"{_gb(gpu_memory[gpu])}); the model needs {_gb(sum(sizes.values()))} of "
                f"weights over {len(gpu_memory)} GPU(s) with {_gb(sum(budget.values()))} of "
                "budget: give it more or larger GPUs (num_gpus)"
            )
        device_map[name] = gpu
        free[gpu] -= size
    return Placement(device_map, budget, dict(sizes))


def component_sizes(folder: str | Path, dtype_bytes: int) -> dict[str, int]:
    """Bytes of each model component of a diffusers checkpoint folder, at `dtype_bytes` per
    floating-point parameter (others at their stored size), from the safetensors headers alone
    (no weights are read).

    Raises:
        PlacementError: a folder without model_index.json, or a component without safetensors.
    """
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise PlacementError(f"{folder}: no model_index.json (not a diffusers pipeline folder)")
    out = {}
    for name, spec in json.loads(index.read_text()).items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / name
        files = sorted(sub.glob("*.safetensors")) if sub.is_dir() else []
        if not files:
            if sub.is_dir() and (sub / "config.json").is_file():
                raise PlacementError(f"{sub}: a model component without *.safetensors weights")
            continue  # a tokenizer, a scheduler, a processor: no weights
        plain = [f for f in files if f.name.count(".") == 1]  # skip variants (x.fp16.safetensors)
        out[name] = sum(_tensor_bytes(f, dtype_bytes) for f in plain or files)
    return out


def gpus_for(num_gpus: float) -> int:
    """GPUs a replica spreads over: its whole GPUs when it has more than one, else 1."""
    return int(num_gpus) if num_gpus >= 2 else 1


def plan_for(
    num_gpus: float, folder: str | Path, device: str, dtype: Any, revision: str | None = None
) -> Placement | None:
    """The placement for a replica with `num_gpus` on `device`, or None when it uses one device
    (then one `.to(device)` is right). `folder` is the checkpoint folder or a hub id in the
    local cache (resolved offline)."""
    if gpus_for(num_gpus) < 2 or not device.startswith("cuda"):
        return None
    import torch

    visible = torch.cuda.device_count()
    want = gpus_for(num_gpus)
    if visible < want:
        raise PlacementError(f"the replica asks for {want} GPUs but sees {visible}")
    path = Path(folder)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(folder), revision=revision, local_files_only=True))
    sizes = component_sizes(path, torch.empty((), dtype=dtype).element_size())
    memory = [torch.cuda.get_device_properties(i).total_memory for i in range(want)]
    return plan_placement(sizes, memory)


def check_loaded(pipe: Any, placement: Placement) -> None:
    """PlacementError unless the loaded pipeline's components sit where the plan put them."""
    actual = dict(getattr(pipe, "hf_device_map", None) or {})
    wrong = {
        name: actual.get(name)
        for name, gpu in placement.device_map.items()
        if str(actual.get(name)) not in (str(gpu), f"cuda:{gpu}")
    }
    if wrong:
        raise PlacementError(
            f"diffusers placed components {wrong} (planned {placement.device_map}); "
            "refusing a replica whose components are not where the plan put them"
        )


def _tensor_bytes(path: Path, dtype_bytes: int) -> int:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    total = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for d in t["shape"]:
            numel *= d
        per = dtype_bytes if t["dtype"] in _FLOAT_DTYPES else _DTYPE_BYTES.get(t["dtype"], 1)
        total += numel * per
    return total


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"
