"""CLIP alignment: image↔prompt and image↔reference image, through open_clip.

A real checkpoint is read from a local path (`evaluation.clip_weights`): a folder in open_clip's
`local-dir:` layout (open_clip_config.json + weights), or a weights file for the architecture in
`evaluation.clip_model`. Without one, a tiny CLIP with random weights is built from a config into
the cache and loaded back through the same `local-dir:` path; its tokenizer is open_clip's real
OpenAI BPE (shipped inside the package), so token counts and truncation are real, but its scores
are labelled "not comparable to published CLIP scores".

Per image, the score is the cosine similarity of the L2-normalised image and prompt embeddings;
a group's `clipscore` is torchmetrics' CLIPScore of it, max(100 · mean cosine, 0), the figure
papers publish (a reference test checks it against `torchmetrics.functional.multimodal
.clip_score` on the same network). The composite maps the mean cosine to 0-100 with anchors from
the config.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from config import EvaluationConfig
from config.cache import cache_dir
from evaluation._hashing import file_sha256

__all__ = [
    "TINY_CLIP_LABEL",
    "ClipModel",
    "ClipSpec",
    "ClipStats",
    "clipscore",
    "resolve_clip_spec",
]

TINY_CLIP_LABEL = "tiny random-weight CLIP: scores not comparable to published CLIP scores"
_TINY_NAME = "tiny-clip-v1"
_TINY_SEED = 0  # fixed, so the tiny CLIP is the same network in every run
_TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to load: `model_name` (maybe 'local-dir:...') and an optional weights file."""

    model_name: str
    pretrained: str | None
    key: str
    label: str
    comparable: bool


def resolve_clip_spec(cfg: EvaluationConfig) -> ClipSpec:
    """The CLIP a config asks for; builds the tiny random-weight CLIP into the cache if needed."""
    if cfg.clip_weights:
        path = Path(cfg.clip_weights).expanduser()
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise FileNotFoundError(
                    f"evaluation.clip_weights: folder {str(path)!r} has no open_clip_config.json "
                    "(expected open_clip's local-dir layout)"
                )
            return ClipSpec(
                model_name=f"local-dir:{path.resolve()}",
                pretrained=None,
                key=f"local-dir:{_folder_digest(path)}",
                label=f"open_clip checkpoint folder {path.name}",
                comparable=True,
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"evaluation.clip_weights: no such file or folder {str(path)!r}"
            )
        return ClipSpec(
            model_name=cfg.clip_model,
            pretrained=str(path.resolve()),
            key=f"{cfg.clip_model}:{file_sha256(path)}",
            label=f"open_clip {cfg.clip_model} from {path.name}",
            comparable=True,
        )
    folder = _build_tiny(cache_dir() / "evaluation" / "nets" / f"{_TINY_NAME}-seed{_TINY_SEED}")
    return ClipSpec(
        model_name=f"local-dir:{folder}",
        pretrained=None,
        key=f"{_TINY_NAME}:{_folder_digest(folder)}",
        label=TINY_CLIP_LABEL,
        comparable=False,
    )


class ClipModel:
    """A loaded CLIP with its preprocessing and tokenizer; embeddings come back L2-normalised."""

    def __init__(self, spec: ClipSpec, device: str | torch.device = "cpu") -> None:
        import open_clip

        self.spec = spec
        self.device = torch.device(device)
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model_name, pretrained=spec.pretrained, device=self.device
        )
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(spec.model_name)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77))
        self._text_cache: dict[str, np.ndarray] = {}
        self._token_counts: dict[str, int] = {}

    def count_tokens(self, prompt: str) -> int:
        """Tokens the prompt takes in CLIP's context, start and end tokens included."""
        if prompt not in self._token_counts:
            encode = getattr(self.tokenizer, "encode", None)
            if encode is None:  # HF tokenizers: count through the wrapped tokenizer
                n = len(self.tokenizer.tokenizer(prompt)["input_ids"])
            else:
                n = len(encode(prompt)) + 2
            self._token_counts[prompt] = n
        return self._token_counts[prompt]

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, E) float32 unit vectors."""
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        batch = torch.stack([self.preprocess(img.convert("RGB")) for img in images]).to(self.device)
        emb = self.model.encode_image(batch).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, E) float32 unit vectors; prompts repeat across a run, so each is encoded once.

        Prompts longer than the context are cut by the tokenizer here; callers report that via
        `count_tokens`.
        """
        todo = sorted({p for p in prompts if p not in self._text_cache})
        if todo:
            tokens = self.tokenizer(todo).to(self.device)
            emb = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
            for p, e in zip(todo, emb.cpu().numpy(), strict=True):
                self._text_cache[p] = e
        return np.stack([self._text_cache[p] for p in prompts])


@dataclass
class ClipStats:
    """Sums of CLIP cosines for one image set; merging adds them."""

    text_sum: float = 0.0
    text_sq: float = 0.0
    text_n: int = 0
    ref_sum: float = 0.0
    ref_sq: float = 0.0
    ref_n: int = 0
    truncated: int = 0

    def add_text(self, cosines: Sequence[float], truncated: Sequence[bool]) -> None:
        c = np.asarray(cosines, dtype=np.float64)
        self.text_sum += float(c.sum())
        self.text_sq += float((c * c).sum())
        self.text_n += len(c)
        self.truncated += int(np.sum(truncated))

    def add_ref(self, cosines: Sequence[float]) -> None:
        c = np.asarray(cosines, dtype=np.float64)
        self.ref_sum += float(c.sum())
        self.ref_sq += float((c * c).sum())
        self.ref_n += len(c)

    def merge(self, other: ClipStats) -> ClipStats:
        return ClipStats(
            text_sum=self.text_sum + other.text_sum,
            text_sq=self.text_sq + other.text_sq,
            text_n=self.text_n + other.text_n,
            ref_sum=self.ref_sum + other.ref_sum,
            ref_sq=self.ref_sq + other.ref_sq,
            ref_n=self.ref_n + other.ref_n,
            truncated=self.truncated + other.truncated,
        )

    @property
    def text_mean(self) -> float | None:
        return self.text_sum / self.text_n if self.text_n else None

    @property
    def ref_mean(self) -> float | None:
        return self.ref_sum / self.ref_n if self.ref_n else None

    @property
    def clipscore(self) -> float | None:
        """torchmetrics' CLIPScore of the image↔prompt pairs: max(100 · mean cosine, 0)."""
        return clipscore(self.text_mean)


def clipscore(mean_cosine: float | None) -> float | None:
    """torchmetrics' CLIPScore from a mean image↔text cosine: max(100 · cos, 0)."""
    return None if mean_cosine is None else max(100.0 * mean_cosine, 0.0)


def _build_tiny(folder: Path) -> Path:
    """Write the tiny CLIP in open_clip's local-dir layout, once, atomically."""
    weights = folder / "open_clip_pytorch_model.bin"
    if weights.is_file() and (folder / "open_clip_config.json").is_file():
        return folder
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global generator
        torch.manual_seed(_TINY_SEED)
        model = open_clip.model.CLIP(**_TINY_CFG)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, weights)
    config = {
        "model_cfg": _TINY_CFG,
        "preprocess_cfg": {"size": _TINY_CFG["vision_cfg"]["image_size"]},
        "easel": {"label": TINY_CLIP_LABEL, "seed": _TINY_SEED},
    }
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    Path(tmp).write_text(json.dumps(config, indent=2))
    os.replace(tmp, folder / "open_clip_config.json")
    return folder


def _folder_digest(folder: Path) -> str:
    """SHA-256 over the config and weight files of a local-dir checkpoint."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in {".json", ".bin", ".pth", ".pt", ".safetensors"}:
            h.update(p.name.encode())
            h.update(file_sha256(p).encode())
    return h.hexdigest()
