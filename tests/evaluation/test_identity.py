"""Identity preservation on real photos that ship inside scikit-image, through dlib's pretrained
face embedding from face-recognition-models (no download).

`data.astronaut()` is NASA's portrait of Eileen Collins; `data.lfw_subset()` holds 25x25 crops of
faces from Labeled Faces in the Wild (the first 100 rows), of other people.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from config import EvaluationConfig
from evaluation.identity import (
    ARCFACE_TEMPLATE,
    ArcFaceOnnxEmbedder,
    DlibFaceEmbedder,
    FaceSpec,
    IdentityRecord,
    IdentityScorer,
    align_arcface,
    detection_view,
    resolve_face_spec,
)

data = pytest.importorskip("skimage.data")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def spec() -> FaceSpec:
    return resolve_face_spec(EvaluationConfig())


@pytest.fixture(scope="module")
def embedder(spec: FaceSpec) -> DlibFaceEmbedder:
    return DlibFaceEmbedder(spec)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def lfw_faces() -> list[Image.Image]:
    """The first 30 LFW-subset faces (other people than the astronaut), as RGB images."""
    faces = data.lfw_subset()[:30]
    return [Image.fromarray(np.rint(f * 255).astype(np.uint8)).convert("RGB") for f in faces]


def test_the_embedder_is_the_pretrained_model_from_the_package(spec: FaceSpec) -> None:
    folder = Path(importlib.util.find_spec("face_recognition_models").origin).parent / "models"
    assert spec.kind == "dlib"
    assert Path(spec.weights) == folder / "dlib_face_recognition_resnet_model_v1.dat"
    assert Path(spec.landmarks) == folder / "shape_predictor_5_face_landmarks.dat"
    assert Path(spec.weights).stat().st_size > 20_000_000  # the trained ResNet, not a stub
    assert spec.key.startswith("dlib-resnet-v1:") and "pretrained" in spec.label
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_the_astronauts_face_is_detected_and_embedded(
    embedder: DlibFaceEmbedder, astronaut: Image.Image
) -> None:
    face = embedder.embed(astronaut)
    assert face is not None
    left, top, right, bottom = face.box
    # her face: roughly x 175-265, y 76-166 of the 512x512 photo
    assert 150 < left < 200 and 220 < right < 290 and 50 < top < 100 and 140 < bottom < 190
    assert face.vector.shape == (128,) and np.linalg.norm(face.vector) == pytest.approx(1.0)


def test_a_flipped_or_recropped_copy_is_closer_than_other_peoples_faces(
    embedder: DlibFaceEmbedder, astronaut: Image.Image, lfw_faces: list[Image.Image]
) -> None:
    me = embedder.embed(astronaut)
    lfw = [embedder.embed(img) for img in lfw_faces]
    others = [f for f in lfw if f is not None]
    assert me is not None and len(others) >= 25  # dlib finds most of the small LFW faces
    closest_other = max(float(o.vector @ me.vector) for o in others)
    flipped = embedder.embed(ImageOps.mirror(astronaut))
    recropped = embedder.embed(
        astronaut.crop((100, 30, 350, 280)).resize((180, 180), Image.Resampling.BICUBIC)
    )
    for copy in (flipped, recropped):
        assert copy is not None
        assert float(copy.vector @ me.vector) > closest_other

    # the same among the LFW faces themselves: a mirrored face finds itself first. At 25 px the
    # embedding is weak, so most, not all, must (26 of 27 when this was written).
    pairs = [
        (face, embedder.embed(ImageOps.mirror(img)))
        for face, img in zip(lfw, lfw_faces, strict=True)
        if face is not None
    ]
    pairs = [(face, m) for face, m in pairs if m is not None]
    gallery = np.stack([face.vector for face, _ in pairs])
    hits = sum(int(np.argmax(gallery @ m.vector) == i) for i, (_, m) in enumerate(pairs))
    assert len(pairs) >= 25 and hits / len(pairs) >= 0.9


def test_small_images_are_upscaled_so_their_face_is_found(embedder: DlibFaceEmbedder) -> None:
    crop = Image.fromarray(data.astronaut()).crop((110, 10, 330, 230))
    small = crop.resize((64, 64), Image.Resampling.BICUBIC)
    arr, upsample = detection_view(small, 160)
    assert arr.shape[:2] == (160, 160) and upsample == 1
    assert embedder.embed(small) is not None
    # without the upscaling the face is under dlib's ~40 px minimum and is missed
    no_upscale = DlibFaceEmbedder(resolve_face_spec(EvaluationConfig(face_min_side=32)))
    assert no_upscale.embed(small) is None
    big = Image.new("RGB", (4000, 3000))
    arr, upsample = detection_view(big, 160)
    assert arr.shape[:2] == (768, 1024) and upsample == 0


def test_no_face_in_the_output_is_a_scored_failure(spec: FaceSpec, astronaut: Image.Image) -> None:
    scorer = IdentityScorer(spec)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    ref = _png(astronaut)
    miss = scorer.score(noise, [ref])
    assert miss == IdentityRecord(refs=1, ref_faces=1, face_found=False, cosine=None)
    hit = scorer.score(ImageOps.mirror(astronaut), [ref, ref])
    assert hit.face_found and hit.ref_faces == 2 and hit.cosine > 0.95
    assert len(scorer._refs) == 1  # the same reference photo is embedded once
    # references without a detectable face cannot judge the output: not the model's failure
    blank = scorer.score(astronaut, [_png(noise), b"not an image"])
    assert blank.ref_faces == 0 and blank.face_found is None and blank.cosine is None
    assert blank.error == "1 reference photo(s) do not decode"
    assert pickle.loads(pickle.dumps(hit)) == hit


def test_arcface_backend_says_onnxruntime_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "w600k_r50.onnx"
    weights.write_bytes(b"onnx")
    cfg = EvaluationConfig(face_embedder="arcface-onnx", face_weights=str(weights))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install onnxruntime"):
        resolve_face_spec(cfg)
    with pytest.raises(ValueError, match="needs face_weights"):
        EvaluationConfig(face_embedder="arcface-onnx")


def test_arcface_alignment_puts_the_eyes_on_the_template() -> None:
    img = Image.new("RGB", (200, 200))
    d = ImageDraw.Draw(img)
    eyes = np.array([[130.0, 92.0], [62.0, 80.0]])  # any order
    for x, y in eyes:
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 255, 255))
    out = align_arcface(np.asarray(img), eyes).astype(float).sum(axis=2)
    assert out.shape == (112, 112)
    for tx, ty in ARCFACE_TEMPLATE[:2]:
        window = out[int(ty) - 3 : int(ty) + 4, int(tx) - 3 : int(tx) + 4]
        assert window.max() > 200  # the dot landed there
    assert out[90:, :].max() < 50  # and nothing else is bright


class _FakeSession:
    """onnxruntime.InferenceSession's two methods; embeds by averaging 8x8 blocks."""

    class _Input:
        name, shape = "input.1", [1, 3, 112, 112]

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def get_inputs(self) -> list:
        return [self._Input()]

    def run(self, _outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["input.1"]
        self.seen.append(x)
        return [x.reshape(1, 3, 14, 8, 14, 8).mean(axis=(3, 5)).reshape(1, -1)]


def test_arcface_embedder_feeds_aligned_faces_in_minus_one_to_one(
    spec: FaceSpec, astronaut: Image.Image
) -> None:
    session = _FakeSession()
    arc = ArcFaceOnnxEmbedder(spec, session=session)
    face = arc.embed(astronaut)
    assert face is not None and face.vector.shape == (588,)
    (x,) = session.seen
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), np.uint8))
    assert arc.embed(noise) is None and len(session.seen) == 1


def test_arcface_onnx_runs_through_onnxruntime(
    tmp_path: Path, spec: FaceSpec, astronaut: Image.Image
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")  # torch's exporter writes through it
    import torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 512)
    )
    path = tmp_path / "arcface-shaped.onnx"
    torch.onnx.export(
        net, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["data"], dynamo=False
    )
    cfg = EvaluationConfig(face_embedder="arcface-onnx", face_weights=str(path))
    onnx_spec = resolve_face_spec(cfg)
    assert onnx_spec.kind == "arcface-onnx" and "onnxruntime" in onnx_spec.label
    scorer = IdentityScorer(onnx_spec)
    rec = scorer.score(ImageOps.mirror(astronaut), [_png(astronaut)])
    assert rec.face_found and rec.cosine is not None and scorer.embedder.dim == 512


def test_odd_images_never_raise_or_blow_up(embedder: DlibFaceEmbedder) -> None:
    sliver = Image.new("L", (2, 3000), 128)
    arr, _ = detection_view(sliver, 160)
    assert max(arr.shape[:2]) <= 4096 and arr.shape[2] == 3
    assert embedder.embed(sliver) is None
    assert embedder.embed(Image.new("RGBA", (1, 1))) is None
    assert embedder.embed(Image.new("I;16", (80, 80))) is None
