"""The scorer actor pool: Ray actors that load their networks once and return merged statistics.

Each actor holds a `Scorer`: the FID feature network and CLIP, loaded once (on a GPU when the
actor has one), and a `ScorerState` of sufficient statistics per group, e.g. per (model, niche)
or per reference niche. Batches of images go to whichever actor is free (a `ray.util.ActorPool`);
at the end the driver merges every actor's state, which gives exactly what one actor scoring
everything would have given (sums add; feature rows are kept in id order). A corrupt image is a
record with an error, never an exception.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from evaluation._decode import decode_image
from evaluation.clip_score import ClipModel, ClipSpec, ClipStats
from evaluation.conditioned_scores import GarmentStats, IdentityStats
from evaluation.features import FeatureSpec, load_feature_net, to_feature_batch
from evaluation.fid import FeatureStats
from evaluation.identity import FaceSpec, IdentityScorer

__all__ = [
    "CONDITIONED_RECORD_KEYS",
    "GroupStats",
    "ImageItem",
    "ProgressPrinter",
    "Scorer",
    "ScorerPool",
    "ScorerSpec",
    "ScorerState",
]


@dataclass(frozen=True)
class ScorerSpec:
    """What a scorer loads: the feature network, for generated images a CLIP, and for jobs
    with reference faces a face embedder (loaded on the first such job)."""

    feature: FeatureSpec
    clip: ClipSpec | None
    face: FaceSpec | None = None


@dataclass(frozen=True)
class ImageItem:
    """One image to score.

    Attributes:
        item_id: unique id (a job id, or a reference file name).
        group: statistics bucket, e.g. ("gen", model, niche) or ("ref", niche).
        data: encoded image bytes (PNG/JPEG/...).
        prompt: the prompt, for CLIP image↔text; None for reference images.
        reference: encoded customer reference image, for CLIP image↔image; None when absent.
        faces: encoded photos of the person the output must look like (identity preservation).
        garments: encoded garment photos the output must show (try-on, CLIP image↔image).
    """

    item_id: str
    group: tuple[str, ...]
    data: bytes
    prompt: str | None = None
    reference: bytes | None = None
    faces: tuple[bytes, ...] = ()
    garments: tuple[bytes, ...] = ()


@dataclass
class GroupStats:
    """Feature, CLIP, identity and garment statistics of one group."""

    features: FeatureStats
    clip: ClipStats = field(default_factory=ClipStats)
    identity: IdentityStats = field(default_factory=IdentityStats)
    garment: GarmentStats = field(default_factory=GarmentStats)

    def merge(self, other: GroupStats) -> GroupStats:
        return GroupStats(
            self.features.merge(other.features),
            self.clip.merge(other.clip),
            self.identity.merge(other.identity),
            self.garment.merge(other.garment),
        )


@dataclass
class ScorerState:
    """Everything a scorer has accumulated; picklable, and `merge` is exact."""

    dim: int
    groups: dict[tuple[str, ...], GroupStats] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def group(self, key: tuple[str, ...]) -> GroupStats:
        if key not in self.groups:
            self.groups[key] = GroupStats(FeatureStats(self.dim))
        return self.groups[key]

    def merge(self, other: ScorerState) -> ScorerState:
        out = ScorerState(self.dim)
        for key in sorted(set(self.groups) | set(other.groups)):
            a, b = self.groups.get(key), other.groups.get(key)
            out.groups[key] = a.merge(b) if a and b else (a or b)  # type: ignore[assignment]
        out.errors = sorted(self.errors + other.errors, key=lambda e: e["item_id"])
        return out


class Scorer:
    """Scores batches of images into a `ScorerState`; the work inside each pool actor."""

    def __init__(self, spec: ScorerSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.device = device
        self.state = ScorerState(spec.feature.dim)
        self._load()

    def _load(self) -> None:
        self._net = load_feature_net(self.spec.feature, self.device)
        self._clip = ClipModel(self.spec.clip, self.device) if self.spec.clip else None
        self._identity: IdentityScorer | None = None  # loaded on the first job with faces

    # The networks are rebuilt from the spec on unpickling; the statistics and the prompt-embedding
    # cache travel as they are (a prompt's embedding depends, in the last bits, on the batch it was
    # encoded in, so a clone must reuse the same ones to carry on exactly).
    def __getstate__(self) -> dict[str, Any]:
        cache = dict(self._clip._text_cache) if self._clip else {}
        return {"spec": self.spec, "device": self.device, "state": self.state, "text": cache}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.spec, self.device, self.state = d["spec"], d["device"], d["state"]
        self._load()
        if self._clip:
            self._clip._text_cache.update(d["text"])

    def reset(self) -> None:
        self.state = ScorerState(self.spec.feature.dim)

    @torch.no_grad()
    def score_batch(self, items: list[ImageItem]) -> list[dict[str, Any]]:
        """Add a batch to the state; returns one record per item (ok or with its error)."""
        records: list[dict[str, Any]] = []
        good: list[tuple[ImageItem, Image.Image, dict[str, Any]]] = []
        for item in items:
            rec: dict[str, Any] = {
                "item_id": item.item_id,
                "group": item.group,
                "ok": False,
                "error": None,
                "clip_text": None,
                "clip_ref": None,
                "prompt_tokens": None,
                "prompt_truncated": None,
                **dict.fromkeys(CONDITIONED_RECORD_KEYS),
            }
            records.append(rec)
            try:
                img = decode_image(item.data)
            except Exception as exc:  # any decoder failure is that image's record, not the batch's
                rec["error"] = f"corrupt image: {type(exc).__name__}: {exc}"
                self.state.errors.append({"item_id": item.item_id, "error": rec["error"]})
                continue
            rec["ok"] = True
            good.append((item, img, rec))
        if not good:
            return records

        batch = to_feature_batch([g[1] for g in good], self.spec.feature.image_size)
        feats = self._net(batch.to(self.device)).double().cpu().numpy()
        by_group: dict[tuple[str, ...], list[int]] = {}
        for i, (item, _, _) in enumerate(good):
            by_group.setdefault(item.group, []).append(i)
        for key, rows in by_group.items():
            self.state.group(key).features.update([good[i][0].item_id for i in rows], feats[rows])

        prompted = [g for g in good if g[0].prompt is not None]
        img_emb = self._score_clip(prompted) if self._clip is not None else None
        self._score_conditioned(prompted, img_emb)
        return records

    def _score_clip(self, good: list[tuple[ImageItem, Image.Image, dict[str, Any]]]) -> Any:
        """CLIP text and reference scores; returns the images' CLIP embeddings (or None)."""
        if not good:
            return None
        clip = self._clip
        assert clip is not None
        img_emb = clip.encode_images([g[1] for g in good])
        txt_emb = clip.encode_prompts([g[0].prompt for g in good])  # type: ignore[misc]
        cos_text = (img_emb * txt_emb).sum(axis=1)
        refs: list[int] = []
        ref_imgs: list[Image.Image] = []
        for i, (item, _, rec) in enumerate(good):
            tokens = clip.count_tokens(item.prompt)  # type: ignore[arg-type]
            rec["prompt_tokens"] = tokens
            rec["prompt_truncated"] = tokens > clip.context_length
            rec["clip_text"] = float(cos_text[i])
            if item.reference is not None:
                try:
                    ref_imgs.append(decode_image(item.reference))
                    refs.append(i)
                except Exception as exc:  # a bad reference loses only the reference score
                    rec["error"] = f"corrupt reference image: {type(exc).__name__}: {exc}"
        for item, _, rec in good:
            stats = self.state.group(item.group).clip
            stats.add_text([rec["clip_text"]], [rec["prompt_truncated"]])
        if refs:
            ref_emb = clip.encode_images(ref_imgs)
            cos_ref = (img_emb[refs] * ref_emb).sum(axis=1)
            for j, i in enumerate(refs):
                good[i][2]["clip_ref"] = float(cos_ref[j])
                self.state.group(good[i][0].group).clip.add_ref([float(cos_ref[j])])
        return img_emb

    def _score_conditioned(
        self, good: list[tuple[ImageItem, Image.Image, dict[str, Any]]], img_emb: Any
    ) -> None:
        """Identity against the job's faces; garment similarity (CLIP) against its garments."""
        for i, (item, img, rec) in enumerate(good):
            stats = self.state.group(item.group)
            if item.faces:
                if self.spec.face is None:
                    rec["error"] = _join(rec["error"], "identity not scored: no face embedder")
                else:
                    if self._identity is None:
                        self._identity = IdentityScorer(self.spec.face)
                    try:
                        r = self._identity.score(img, item.faces)
                    except Exception as exc:  # an odd image loses its identity score only
                        rec["error"] = _join(rec["error"], f"identity not scored: {exc!r}")
                    else:
                        rec.update(
                            identity_refs=r.refs,
                            identity_ref_faces=r.ref_faces,
                            face_found=r.face_found,
                            identity_cos=r.cosine,
                        )
                        rec["error"] = _join(rec["error"], r.error)
                        stats.identity.add(r)
            if item.garments and img_emb is not None and self._clip is not None:
                garments = []
                for data in item.garments:
                    try:
                        garments.append(decode_image(data))
                    except Exception as exc:  # a bad garment photo loses only its score
                        rec["error"] = _join(rec["error"], f"corrupt garment image: {exc}")
                if garments:
                    # several garments: the mean of the output's cosine to each
                    cos = float((self._clip.encode_images(garments) @ img_emb[i]).mean())
                    rec["garment_cos"] = cos
                    stats.garment.add([cos])


# The per-image keys of conditioned jobs (null where a job carried no such reference).
CONDITIONED_RECORD_KEYS = (
    "identity_refs",
    "identity_ref_faces",
    "face_found",
    "identity_cos",
    "garment_cos",
)


def _join(a: str | None, b: str | None) -> str | None:
    return "; ".join(x for x in (a, b) if x) or None


class _ScorerActor:
    """Ray actor body: one Scorer, torch threads matched to the actor's CPUs."""

    def __init__(self, spec: ScorerSpec, num_cpus: float, num_gpus: float) -> None:
        torch.set_num_threads(max(1, int(num_cpus)))
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.scorer = Scorer(spec, device)

    def ready(self) -> str:
        return self.scorer.device

    def score_batch(self, items: list[ImageItem]) -> list[dict[str, Any]]:
        return self.scorer.score_batch(items)

    def state(self) -> ScorerState:
        return self.scorer.state

    def reset(self) -> None:
        self.scorer.reset()


class ScorerPool:
    """A pool of scorer actors on the current Ray cluster.

    Args:
        spec: networks to load (once per actor).
        actors: number of actors.
        num_cpus: CPUs per actor (its torch threads too).
        num_gpus: GPUs per actor; > 0 places actors on GPU nodes and scores on CUDA.
    """

    def __init__(
        self, spec: ScorerSpec, *, actors: int, num_cpus: float = 1, num_gpus: float = 0
    ) -> None:
        import ray

        if actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        remote = ray.remote(_ScorerActor).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._actors = [remote.remote(spec, num_cpus, num_gpus) for _ in range(actors)]
        self.devices = ray.get([a.ready.remote() for a in self._actors])

    def score(
        self,
        items: Iterable[ImageItem],
        *,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Score every item; returns the per-item records (order not kept)."""
        from ray.util import ActorPool

        # Each actor appears twice, so a second batch waits in its queue while the first runs and
        # the actor never idles on the driver's round trip.
        pool = ActorPool(self._actors * 2)
        records: list[dict[str, Any]] = []

        def collect() -> None:
            records.extend(pool.get_next_unordered())
            if progress:
                progress(len(records))

        for batch in _chunks(items, batch_size):
            while not pool.has_free():
                collect()
            pool.submit(lambda a, b: a.score_batch.remote(b), batch)
        while pool.has_next():
            collect()
        return records

    def states(self) -> list[ScorerState]:
        """Each actor's own statistics."""
        import ray

        return ray.get([a.state.remote() for a in self._actors])

    def state(self) -> ScorerState:
        """Every actor's statistics, merged."""
        states = self.states()
        merged = states[0]
        for s in states[1:]:
            merged = merged.merge(s)
        return merged

    def reset(self) -> None:
        import ray

        ray.get([a.reset.remote() for a in self._actors])

    def close(self) -> None:
        import ray

        for a in self._actors:
            ray.kill(a)
        self._actors = []

    def __enter__(self) -> ScorerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: Iterable[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    batch: list[ImageItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ProgressPrinter:
    """Prints 'scored n/total images (x img/s)' to stderr at most every `every_s` seconds."""

    def __init__(self, total: int, label: str = "scored", every_s: float = 2.0) -> None:
        self.total, self.label, self.every_s = total, label, every_s
        self._start = self._last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and done < self.total:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9)
        print(f"{self.label} {done}/{self.total} images ({rate:.1f} img/s)", file=sys.stderr)
