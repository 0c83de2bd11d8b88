"""Identity preservation: does the generated face belong to the person in the reference photos?

A face is found with dlib's HOG frontal face detector, located by its 5-point landmark model and
embedded by a pretrained network; the score of an output is the cosine between its face
embedding and the (normalised) mean embedding of the job's reference faces. Two embedders sit
behind one small interface (`FaceEmbedder.embed(image) -> FaceEmbedding | None`):

- `dlib` (the default): dlib's pretrained 128-d ResNet face embedding, whose weights ship
  inside the `face-recognition-models` package, so nothing is downloaded. Its embeddings are not
  centred: cosines between *different* people already sit high (benchmarks/identity_calibration.py
  measures where, on scikit-image's LFW subset).
- `arcface-onnx`: an ArcFace ONNX file the user has (e.g. insightface's w600k_r50.onnx), run by
  onnxruntime, which easel does not install: this backend says so when it is resolved. Faces are
  found and located by dlib as above, then aligned by their eye centres onto ArcFace's 112x112
  template (insightface aligns on five of its own landmarks, so expect small differences).

An output in which no face is found is a scored failure (`face_found` false), never a dropped
row; a job whose references hold no detectable face is not the model's fault and is counted
apart. Small images are upscaled first (`evaluation.face_min_side`), since dlib's detector
misses faces below ~40 px; large ones are scaled down to 1024 px on the long side.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from config import EvaluationConfig
from evaluation._decode import decode_image
from evaluation._hashing import file_sha256

__all__ = [
    "ARCFACE_TEMPLATE",
    "FaceEmbedder",
    "FaceEmbedding",
    "FaceSpec",
    "IdentityRecord",
    "IdentityScorer",
    "align_arcface",
    "detection_view",
    "load_face_embedder",
    "resolve_face_spec",
]

_MAX_SIDE = 1024
_MAX_UPSCALED_SIDE = 4096  # a sliver (e.g. 2x3000 px) is not upscaled into gigapixels
_UPSAMPLE_BELOW = 640  # short side under which dlib's detector runs on a 2x upsampled pyramid
_LANDMARKS = "shape_predictor_5_face_landmarks.dat"
_DLIB_NET = "dlib_face_recognition_resnet_model_v1.dat"
# insightface's ArcFace template (112x112): eyes, nose tip, mouth corners, in image coordinates.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


@dataclass(frozen=True)
class FaceSpec:
    """Which face embedder to load; plain strings, so it pickles to every scorer actor.

    Attributes:
        kind: 'dlib' or 'arcface-onnx'.
        landmarks: dlib 5-point landmark model (both kinds locate faces with it).
        weights: the embedding network: dlib's ResNet .dat, or the ArcFace .onnx.
        key: identifies the weights (kind, file hash).
        label: what the report prints.
        min_side: short side images are upscaled to before detection.
    """

    kind: Literal["dlib", "arcface-onnx"]
    landmarks: str
    weights: str
    key: str
    label: str
    min_side: int


@dataclass(frozen=True)
class FaceEmbedding:
    """The most confident face of an image: unit embedding, detector score, box (l, t, r, b)."""

    vector: np.ndarray
    score: float
    box: tuple[int, int, int, int]


class FaceEmbedder(Protocol):
    """Finds the most confident face of an image and embeds it; None when there is none."""

    dim: int

    def embed(self, image: Image.Image) -> FaceEmbedding | None: ...


def resolve_face_spec(cfg: EvaluationConfig) -> FaceSpec:
    """The face embedder a config asks for, checked before any actor starts.

    ModuleNotFoundError naming the package to install when dlib, face-recognition-models or (for
    'arcface-onnx') onnxruntime is missing; FileNotFoundError when face_weights is not a file.
    """
    models = _dlib_models_folder()
    landmarks = models / _LANDMARKS
    import dlib

    detector = f"dlib {dlib.__version__} HOG frontal face detector, 5-point landmarks"
    if cfg.face_embedder == "arcface-onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise ModuleNotFoundError(
                "evaluation.face_embedder 'arcface-onnx' runs the ONNX file with onnxruntime, "
                "which is not installed: `pip install onnxruntime` (or onnxruntime-gpu), or use "
                "face_embedder: dlib"
            )
        path = Path(str(cfg.face_weights)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"evaluation.face_weights: no such file {str(path)!r} (expected an ArcFace "
                "ONNX model taking 1x3x112x112 RGB in [-1, 1], e.g. insightface's w600k_r50.onnx)"
            )
        return FaceSpec(
            kind="arcface-onnx",
            landmarks=str(landmarks),
            weights=str(path.resolve()),
            key=f"arcface-onnx:{_digest(path)}",
            label=f"ArcFace ONNX {path.name} (onnxruntime; eye-aligned 112x112; {detector})",
            min_side=cfg.face_min_side,
        )
    weights = models / _DLIB_NET
    version = metadata.version("face-recognition-models")
    return FaceSpec(
        kind="dlib",
        landmarks=str(landmarks),
        weights=str(weights),
        key=f"dlib-resnet-v1:{_digest(weights)}",
        label=(
            f"dlib ResNet face embedding, 128-d, pretrained (face-recognition-models {version}; "
            f"{detector})"
        ),
        min_side=cfg.face_min_side,
    )


def load_face_embedder(spec: FaceSpec) -> FaceEmbedder:
    """Load the embedder a spec names (dlib models take ~1 s; do it once per actor)."""
    if spec.kind == "arcface-onnx":
        return ArcFaceOnnxEmbedder(spec)
    return DlibFaceEmbedder(spec)


def detection_view(image: Image.Image, min_side: int) -> tuple[np.ndarray, int]:
    """The RGB array faces are looked for in, and the detector's upsampling for it.

    Scaled (bicubic) so the short side is at least `min_side` and the long side at most 1024
    (the short side wins for elongated images, up to a long side of 4096); upsampled once more
    inside the detector when the short side is under 640 px.
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = min(1.0, _MAX_SIDE / max(w, h))
    if min(w, h) * scale < min_side:
        scale = min(min_side / min(w, h), _MAX_UPSCALED_SIDE / max(w, h))
    if abs(scale - 1.0) > 1e-9:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    upsample = 1 if min(rgb.size) < _UPSAMPLE_BELOW else 0
    return np.asarray(rgb), upsample


class _DlibLocator:
    """dlib's frontal face detector and 5-point landmarks: the most confident face, located."""

    def __init__(self, spec: FaceSpec) -> None:
        import dlib

        self.min_side = spec.min_side
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(spec.landmarks)

    def locate(self, image: Image.Image) -> tuple[np.ndarray, Any, float, Any] | None:
        """(array, landmarks, detector score, box) of the most confident face, or None."""
        arr, upsample = detection_view(image, self.min_side)
        boxes, scores, _ = self._detector.run(arr, upsample, 0.0)
        if not boxes:
            return None
        best = int(np.argmax(scores))
        box = boxes[best]
        return arr, self._landmarks(arr, box), float(scores[best]), box


def _found(vector: np.ndarray, score: float, box: Any) -> FaceEmbedding:
    v = np.asarray(vector, dtype=np.float64)
    return FaceEmbedding(
        vector=v / np.linalg.norm(v),
        score=score,
        box=(int(box.left()), int(box.top()), int(box.right()), int(box.bottom())),
    )


class DlibFaceEmbedder:
    """dlib's pretrained 128-d ResNet face embedding (no jitter: deterministic)."""

    dim = 128

    def __init__(self, spec: FaceSpec) -> None:
        import dlib

        self._locator = _DlibLocator(spec)
        self._net = dlib.face_recognition_model_v1(spec.weights)

    def embed(self, image: Image.Image) -> FaceEmbedding | None:
        hit = self._locator.locate(image)
        if hit is None:
            return None
        arr, shape, score, box = hit
        return _found(np.array(self._net.compute_face_descriptor(arr, shape, 0)), score, box)


def align_arcface(arr: np.ndarray, eyes: np.ndarray, size: int = 112) -> np.ndarray:
    """The face warped so its eye centres land on ArcFace's template: uint8 (size, size, 3).

    `eyes` is (2, 2): the two eye centres in image coordinates, in any order.
    """
    src = eyes[np.argsort(eyes[:, 0])]  # image-left eye first, as in the template
    dst = ARCFACE_TEMPLATE[:2] * (size / 112.0)
    # similarity transform from two point pairs, as complex numbers: z_dst = a·z_src + b
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    a = (zd[1] - zd[0]) / (zs[1] - zs[0])
    b = zd[0] - a * zs[0]
    # PIL maps each output pixel back to the input: z_src = (z_dst − b) / a
    inv = 1 / a
    c, s = inv.real, inv.imag
    t = -b * inv
    coeffs = (c, -s, t.real, s, c, t.imag)
    img = Image.fromarray(arr).transform(
        (size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(img)


class ArcFaceOnnxEmbedder:
    """An ArcFace ONNX model on dlib-located, eye-aligned 112x112 faces.

    Args:
        spec: the resolved spec (kind 'arcface-onnx').
        session: an object with onnxruntime.InferenceSession's `get_inputs()` and `run()`; None
            opens `spec.weights` with onnxruntime on the CPU.
    """

    def __init__(self, spec: FaceSpec, session: Any | None = None) -> None:
        if session is None:
            import onnxruntime

            session = onnxruntime.InferenceSession(spec.weights, providers=["CPUExecutionProvider"])
        self._session = session
        info = session.get_inputs()[0]
        self._input = info.name
        shape = list(info.shape)
        self._size = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else 112
        self._locator = _DlibLocator(spec)
        self.dim = 0  # known after the first face; ArcFace models give 512

    def embed(self, image: Image.Image) -> FaceEmbedding | None:
        hit = self._locator.locate(image)
        if hit is None:
            return None
        arr, shape, score, box = hit
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(4)], dtype=np.float64)
        # dlib's 5-point model: two corners per eye (points 0-1 and 2-3), then the nose
        eyes = np.stack([pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)])
        face = align_arcface(arr, eyes, self._size)
        blob = ((face.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        out = np.asarray(self._session.run(None, {self._input: blob})[0]).reshape(-1)
        self.dim = out.size
        return _found(out, score, box)


# --- scoring a job ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityRecord:
    """Identity of one output against its job's reference photos.

    Attributes:
        refs: reference photos the job carried.
        ref_faces: those in which a face was found (0: the job cannot be scored for identity).
        face_found: a face was found in the output; None when ref_faces is 0.
        cosine: output face against the mean reference face; None without both.
        error: reference photos that did not decode, if any.
    """

    refs: int
    ref_faces: int
    face_found: bool | None
    cosine: float | None
    error: str | None = None


class IdentityScorer:
    """A face embedder plus a cache of reference embeddings (jobs reuse a customer's photos)."""

    def __init__(self, spec: FaceSpec) -> None:
        self.spec = spec
        self.embedder = load_face_embedder(spec)
        self._refs: dict[str, np.ndarray | None] = {}

    def reference(self, data: bytes) -> np.ndarray | None:
        """The unit embedding of a reference photo's face (None without one); cached by hash.

        Raises on bytes that do not decode.
        """
        key = hashlib.sha256(data).hexdigest()
        if key not in self._refs:
            face = self.embedder.embed(decode_image(data))
            self._refs[key] = None if face is None else face.vector
        return self._refs[key]

    def score(self, output: Image.Image, refs: Sequence[bytes]) -> IdentityRecord:
        """Score one decoded output against its job's reference photos (encoded)."""
        vectors, bad = [], 0
        for data in refs:
            try:
                v = self.reference(data)
            except Exception:  # a bad reference is the job's data problem, recorded below
                bad += 1
                continue
            if v is not None:
                vectors.append(v)
        error = f"{bad} reference photo(s) do not decode" if bad else None
        if not vectors:
            return IdentityRecord(len(refs), 0, None, None, error)
        centre = np.mean(vectors, axis=0)
        centre /= np.linalg.norm(centre)
        face = self.embedder.embed(output)
        if face is None:
            return IdentityRecord(len(refs), len(vectors), False, None, error)
        return IdentityRecord(len(refs), len(vectors), True, float(face.vector @ centre), error)


def _dlib_models_folder() -> Path:
    # face_recognition_models' __init__ imports pkg_resources (gone from recent setuptools), so
    # its folder is found without importing it.
    for pkg, dist in (("dlib", "dlib-bin"), ("face_recognition_models", "face-recognition-models")):
        if importlib.util.find_spec(pkg) is None:
            raise ModuleNotFoundError(
                f"identity scoring needs the {dist} package (dlib's face detector and pretrained "
                f"face embedding): `pip install dlib-bin face-recognition-models`"
            )
    spec = importlib.util.find_spec("face_recognition_models")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in (_LANDMARKS, _DLIB_NET):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing from face-recognition-models")
    return folder


_DIGESTS: dict[tuple[str, int, float], str] = {}


def _digest(path: Path) -> str:
    """A weights file's SHA-256 (first 16 hex), once per process and file version."""
    st = path.stat()
    k = (str(path.resolve()), st.st_size, st.st_mtime)
    if k not in _DIGESTS:
        _DIGESTS[k] = file_sha256(path)[:16]
    return _DIGESTS[k]
