"""Pluggable FID feature networks: Inception-v3 from a local weights file, or a tiny local net.

Published FID uses the TF-ported Inception-v3 ("pt_inception-2015-12-05"); its weights are a
download, so they are read only from a local file named in the config (`feature_weights`), through
torchmetrics' `NoTrainInceptionV3` (torch-fidelity's network). Without that file, a small conv net
with fixed random weights stands in: random-init conv features still separate image distributions
(so FID/KID rank sets sensibly), cost a few MFLOPs per 64 px image on a CPU, and are labelled
"not comparable to published FID" wherever a score is shown.

Every network takes uint8 images (N, 3, H, W) and returns float features (N, dim).

**Comparable to published FID** only when the network is the FID Inception-v3 *and* images reach
it at 299×299 through clean-fid's resize (PIL bicubic on each channel in float, the whole image,
no crop; Parmar et al., "On Aliased Resizing and Surprising Subtleties in GAN Evaluation"):
Inception fed 64 px images and upsampled inside the network, or resized with an aliasing filter,
gives FIDs that differ from published ones by more than the gaps between models. One deviation,
stated: torch-fidelity's network takes uint8, so the float resize is rounded to 8 bits (half a
level at most) before it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from config import EvaluationConfig
from config.cache import cache_dir
from evaluation._hashing import file_sha256

__all__ = [
    "COMPARABLE_IMAGE_SIZE",
    "TINY_FEATURE_ARCH",
    "TINY_FEATURE_DIM",
    "FeatureSpec",
    "TinyConvNet",
    "clean_resize",
    "load_feature_net",
    "resolve_feature_spec",
    "to_feature_batch",
]

COMPARABLE_IMAGE_SIZE = 299  # Inception-v3's input, at which published FIDs are computed
TINY_FEATURE_ARCH = "tiny-conv-v1"
TINY_FEATURE_DIM = 128
# Fixed, not the benchmark seed: the tiny net must be the same network in every run, or its FIDs
# would not compare across runs.
_TINY_SEED = 0
_TINY_LABEL = (
    f"tiny random-init conv net ({TINY_FEATURE_DIM}-d features): not comparable to published FID"
)


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature network to load, and what identifies it in caches and reports."""

    kind: Literal["tiny", "inception"]
    path: str
    key: str
    dim: int
    label: str
    comparable: bool
    image_size: int

    @property
    def resize_policy(self) -> str:
        """How an image becomes network input; part of the reference-statistics cache key."""
        policy = f"rgb/clean-fid-pil-bicubic-float/{self.image_size}x{self.image_size}/uint8"
        if self.kind == "inception" and self.image_size != COMPARABLE_IMAGE_SIZE:
            policy += "/tf1-bilinear-299-in-net"
        return policy

    @property
    def not_comparable_because(self) -> str | None:
        """Why FIDs from this network are not comparable to published ones; None if they are."""
        if self.comparable:
            return None
        if self.kind == "tiny":
            return "tiny random-init feature net, not Inception-v3"
        return (
            f"Inception-v3 at image_size {self.image_size}: published FIDs use "
            f"{COMPARABLE_IMAGE_SIZE} px with clean-fid's resize"
        )


class TinyConvNet(nn.Module):
    """Four random-init conv layers and a global average pool: 128-d features, fast on a CPU."""

    num_features = TINY_FEATURE_DIM

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(128, TINY_FEATURE_DIM, 3, stride=1, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        h = self.body(x.float() / 127.5 - 1.0)
        return h.mean(dim=(2, 3))

    @classmethod
    def random_init(cls, seed: int) -> TinyConvNet:
        """He-normal weights from a private generator: the same net for the same seed."""
        net = cls()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for mod in net.modules():
                if isinstance(mod, nn.Conv2d):
                    fan_in = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
                    std = (2 / fan_in) ** 0.5
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * std)
                    mod.bias.zero_()
        return net.eval()


def resolve_feature_spec(cfg: EvaluationConfig) -> FeatureSpec:
    """The feature network a config asks for; builds the tiny net into the cache if needed.

    `cfg.feature_weights` set: Inception-v3 FID weights from that file (ConfigError-style
    FileNotFoundError if missing). Left out: the tiny random-init net from `$EASEL_CACHE`.
    """
    if cfg.feature_weights:
        path = Path(cfg.feature_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"evaluation.feature_weights: no such file {str(path)!r} (expected the FID "
                "Inception-v3 weights, e.g. weights-inception-2015-12-05-6726825d.pth)"
            )
        comparable = cfg.image_size == COMPARABLE_IMAGE_SIZE
        label = f"Inception-v3 pool3 (2048-d) from {path.name}"
        if not comparable:
            label += (
                f" at {cfg.image_size} px: not comparable to published FID (that needs "
                f"{COMPARABLE_IMAGE_SIZE} px with clean-fid's resize)"
            )
        return FeatureSpec(
            kind="inception",
            path=str(path.resolve()),
            key=f"inception-v3-fid:{file_sha256(path)}",
            dim=2048,
            label=label,
            comparable=comparable,
            image_size=cfg.image_size,
        )
    path = _build_tiny(cache_dir() / "evaluation" / "nets")
    return FeatureSpec(
        kind="tiny",
        path=str(path),
        key=f"{TINY_FEATURE_ARCH}:{file_sha256(path)}",
        dim=TINY_FEATURE_DIM,
        label=_TINY_LABEL,
        comparable=False,
        image_size=cfg.image_size,
    )


def load_feature_net(spec: FeatureSpec, device: str | torch.device = "cpu") -> nn.Module:
    """Load the network a spec names, in eval mode, gradients off."""
    if spec.kind == "inception":
        from torchmetrics.image.fid import NoTrainInceptionV3

        net: nn.Module = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=spec.path,
        )
    else:
        blob = torch.load(spec.path, map_location="cpu", weights_only=True)
        if blob.get("arch") != TINY_FEATURE_ARCH:
            raise ValueError(f"{spec.path}: not a {TINY_FEATURE_ARCH} checkpoint")
        net = TinyConvNet()
        net.load_state_dict(blob["state_dict"])
    net.requires_grad_(False)
    return net.eval().to(device)


def clean_resize(img: Image.Image, size: int) -> np.ndarray:
    """clean-fid's resize: RGB, each channel as a float image resized whole with PIL bicubic,
    clipped to [0, 255]; (size, size, 3) float32. An image already at size is left as it is."""
    rgb = img.convert("RGB")
    arr = np.asarray(rgb, dtype=np.float32)
    if rgb.size == (size, size):
        return arr
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(arr[:, :, c])).resize(
                (size, size), Image.Resampling.BICUBIC
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0, 255)


def to_feature_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """clean-fid-resized to size x size, rounded to uint8: (N, 3, size, size).

    The policy is part of the reference-statistics cache key.
    """
    if not images:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    batch = np.stack([np.rint(clean_resize(img, size)) for img in images]).astype(np.uint8)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _build_tiny(folder: Path) -> Path:
    """Write the tiny net once (atomically, so concurrent builders never see half a file)."""
    path = folder / f"{TINY_FEATURE_ARCH}-seed{_TINY_SEED}.pt"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    net = TinyConvNet.random_init(_TINY_SEED)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    torch.save({"arch": TINY_FEATURE_ARCH, "state_dict": net.state_dict()}, tmp)
    os.replace(tmp, path)
    (folder / f"{TINY_FEATURE_ARCH}-seed{_TINY_SEED}.json").write_text(
        json.dumps({"arch": TINY_FEATURE_ARCH, "seed": _TINY_SEED, "label": _TINY_LABEL})
    )
    return path
