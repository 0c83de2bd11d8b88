"""Feature networks: the tiny local net is fixed and labelled; Inception loads from a local file."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from config import load_config
from evaluation.features import (
    TINY_FEATURE_DIM,
    TinyConvNet,
    load_feature_net,
    resolve_feature_spec,
    to_feature_batch,
)


def _images(n: int, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    shape = (size, size, 3)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)]


def test_tiny_net_is_fixed_labelled_and_reloads_identically() -> None:
    ev = load_config().evaluation
    spec = resolve_feature_spec(ev)
    assert spec.kind == "tiny" and not spec.comparable
    assert "not comparable to published FID" in spec.label
    assert spec.key == resolve_feature_spec(ev).key  # built once, then read back
    batch = to_feature_batch(_images(3), ev.image_size)
    a = load_feature_net(spec)(batch)
    b = TinyConvNet.random_init(0)(batch)
    assert a.shape == (3, TINY_FEATURE_DIM)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])  # different images, different features


def test_resize_policy_is_part_of_the_spec() -> None:
    cfg = load_config()
    small = resolve_feature_spec(cfg.evaluation)
    big = resolve_feature_spec(cfg.evaluation.model_copy(update={"image_size": 128}))
    assert small.key == big.key and small.resize_policy != big.resize_policy


def test_feature_batch_is_uint8_rgb_at_the_policy_size() -> None:
    imgs = [Image.new("L", (30, 20), 128), Image.new("RGBA", (64, 64), (1, 2, 3, 4))]
    batch = to_feature_batch(imgs, 32)
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 32, 32)
    assert batch[1, :, 0, 0].tolist() == [1, 2, 3]


def test_tiny_net_rejects_float_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        TinyConvNet.random_init(0)(torch.zeros(1, 3, 8, 8))


def test_inception_loads_from_a_local_weights_file(tmp_path: Path) -> None:
    # The real FID weights are a download; a file of the same format (random weights) exercises the
    # same loading path: the config names a file, torchmetrics' NoTrainInceptionV3 reads it.
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    cls = tf_inception.FeatureExtractorInceptionV3
    # build the architecture with random weights: no download, no weights loaded
    with (
        mock.patch.object(tf_inception, "load_state_dict_from_url", return_value={}),
        mock.patch.object(cls, "load_state_dict"),
    ):
        net = cls("inception-v3-compat", ["2048"])
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)
    ev = load_config().evaluation.model_copy(update={"feature_weights": str(weights)})
    spec = resolve_feature_spec(ev)
    assert spec.kind == "inception" and spec.dim == 2048
    # At the default 64 px the network upsamples inside: not what published FIDs measure.
    assert not spec.comparable and "299" in spec.not_comparable_because
    assert "inception.pth" in spec.label and "tf1-bilinear-299-in-net" in spec.resize_policy
    feats = load_feature_net(spec)(to_feature_batch(_images(2), 64))
    assert feats.shape == (2, 2048)
    at_299 = resolve_feature_spec(ev.model_copy(update={"image_size": 299}))
    assert at_299.comparable and at_299.not_comparable_because is None
    assert "clean-fid" in at_299.resize_policy and "in-net" not in at_299.resize_policy


def test_resize_is_clean_fids_float_bicubic() -> None:
    # clean-fid resizes each channel as a float image with PIL bicubic (no uint8 rounding in
    # between); written out independently here.
    img = _images(1, size=50)[0]
    arr = np.asarray(img, dtype=np.float32)
    want = np.stack(
        [
            np.asarray(Image.fromarray(arr[:, :, c]).resize((32, 32), Image.Resampling.BICUBIC))
            for c in range(3)
        ],
        axis=2,
    )
    got = to_feature_batch([img], 32)[0].permute(1, 2, 0).numpy().astype(np.float32)
    assert np.abs(got - np.clip(want, 0, 255)).max() <= 0.5 + 1e-4


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    ev = load_config().evaluation.model_copy(update={"feature_weights": str(tmp_path / "no.pth")})
    with pytest.raises(FileNotFoundError, match=r"feature_weights.*no\.pth"):
        resolve_feature_spec(ev)
