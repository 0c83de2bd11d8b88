"""CLIP: the tiny local model is labelled and real-tokenized; long prompts are reported."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from config import load_config
from evaluation.clip_score import TINY_CLIP_LABEL, ClipModel, ClipStats, resolve_clip_spec


@pytest.fixture(scope="module")
def clip() -> ClipModel:
    return ClipModel(resolve_clip_spec(load_config().evaluation))


def test_tiny_clip_is_labelled_and_stable(clip: ClipModel) -> None:
    spec = resolve_clip_spec(load_config().evaluation)
    assert spec.label == TINY_CLIP_LABEL and not spec.comparable
    assert spec.model_name.startswith("local-dir:")
    assert spec.key == clip.spec.key


def test_token_counts_are_real_and_long_prompts_exceed_the_context(clip: ClipModel) -> None:
    assert clip.context_length == 77
    assert clip.count_tokens("a photo of a cat") == 7  # 5 BPE tokens + start + end
    long = " ".join(["portrait"] * 100)
    assert clip.count_tokens(long) > clip.context_length


def test_embeddings_are_unit_vectors_and_identical_images_match(clip: ClipModel) -> None:
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    b = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    emb = clip.encode_images([a, a, b])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-5)
    assert float(emb[0] @ emb[1]) == pytest.approx(1.0, abs=1e-5)
    txt = clip.encode_prompts(["a red car", "a red car", "a blue boat"])
    np.testing.assert_allclose(txt[0], txt[1])
    assert not np.allclose(txt[0], txt[2])


def test_clip_stats_merge_by_adding() -> None:
    a, b = ClipStats(), ClipStats()
    a.add_text([0.1, 0.3], [False, True])
    b.add_text([0.2], [False])
    b.add_ref([0.9])
    m = a.merge(b)
    assert m.text_n == 3 and m.truncated == 1 and m.ref_n == 1
    assert m.text_mean == pytest.approx(0.2) and m.ref_mean == pytest.approx(0.9)
    assert ClipStats().text_mean is None
