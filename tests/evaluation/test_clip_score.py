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


def test_clipscore_matches_torchmetrics_clip_score(clip: ClipModel) -> None:
    """Reference test: the scorer's per-image cosines give torchmetrics' CLIPScore.

    torchmetrics' `clip_score` takes any (model, processor) pair through a callable; ours is put
    behind the interface it calls (get_image_features / get_text_features and a processor), so
    the normalisation, cosine, ×100 and clamp are torchmetrics' own code on the same network.
    """
    from types import SimpleNamespace

    import torch
    from torchmetrics.functional.multimodal import clip_score

    from evaluation.features import resolve_feature_spec
    from evaluation.pool import ImageItem, Scorer, ScorerSpec
    from tests.evaluation._fixtures import model_image, png_bytes

    class Model:
        config = SimpleNamespace()

        def to(self, device: object) -> Model:
            return self

        def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return clip.model.encode_image(pixel_values)

        def get_text_features(self, input_ids: torch.Tensor, attention_mask: object) -> object:
            return clip.model.encode_text(input_ids)

    def processor(images=None, text=None, **_: object) -> dict:
        if images is not None:
            pil = [Image.fromarray(i.permute(1, 2, 0).numpy()) for i in images]
            return {"pixel_values": torch.stack([clip.preprocess(p) for p in pil])}
        tokens = clip.tokenizer(text)
        return {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}

    # Drawn scenes and the config's prompts: the tiny CLIP's mean cosine on these is positive,
    # so the clamp at 0 does not hide a difference.
    cfg = load_config()
    rng = np.random.default_rng(2)
    arrays = [np.array(model_image(2, rng)) for _ in range(24)]
    prompts = [p for n in cfg.niches for p in n.prompts][:24]
    ev = load_config().evaluation
    scorer = Scorer(ScorerSpec(resolve_feature_spec(ev), resolve_clip_spec(ev)))
    items = [
        ImageItem(f"j{i}", ("gen", "m", "n"), png_bytes(Image.fromarray(a)), prompt=p)
        for i, (a, p) in enumerate(zip(arrays, prompts, strict=True))
    ]
    records = scorer.score_batch(items)
    ours = scorer.state.groups[("gen", "m", "n")].clip.clipscore
    with torch.no_grad():
        theirs = clip_score(
            [torch.from_numpy(a).permute(2, 0, 1) for a in arrays],
            prompts,
            model_name_or_path=lambda: (Model(), processor),
        )
    assert float(theirs) > 0  # a clamped 0 on both sides would prove little
    assert ours == pytest.approx(float(theirs), abs=1e-3)
    per_image = [100 * r["clip_text"] for r in records]
    assert float(theirs) == pytest.approx(max(np.mean(per_image), 0.0), abs=1e-3)
