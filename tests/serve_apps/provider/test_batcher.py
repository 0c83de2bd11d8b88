"""Which requests of a collected batch share a forward pass, and one pass with references."""

from __future__ import annotations

from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.batcher import group_by_shape


def _req(
    i: int, side: int, steps: int = 4, guidance: float = 0.0, refs: tuple[bytes, ...] = ()
) -> ResolvedRequest:
    return ResolvedRequest(f"r{i}", "m", "p", side, side, steps, guidance, i, references=refs)


def test_groups_keep_arrival_order_and_split_by_shape_steps_and_guidance():
    reqs = [_req(0, 32), _req(1, 48), _req(2, 32), _req(3, 32, steps=2), _req(4, 32, guidance=2)]
    assert group_by_shape(reqs) == [[0, 2], [1], [3], [4]]
    assert group_by_shape([]) == []


def test_groups_split_by_reference_count_and_reference_set():
    a, b = (b"photo-a",), (b"photo-b",)
    reqs = [_req(0, 32), _req(1, 32, refs=a), _req(2, 32, refs=a), _req(3, 32, refs=b),
            _req(4, 32, refs=a + b), _req(5, 32)]  # fmt: skip
    assert group_by_shape(reqs) == [[0, 5], [1, 2], [3], [4]]


def test_run_group_conditions_one_pass_on_its_references():
    """A group of requests sharing one photo set: one Flux.2 pass, every image conditioned."""
    import io

    import numpy as np
    from PIL import Image

    from config import load_config
    from serve_apps.api.images import encode_png
    from serve_apps.provider.batcher import run_group
    from serve_apps.provider.pipelines import load_pipeline, prompt_token_limit

    model = load_config().model("flux2-schnell")
    pipe = load_pipeline(model, device="cpu")
    rng = np.random.default_rng(0)
    photo = encode_png(Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)))
    reqs = [_req(i, 64, steps=2, guidance=1.0, refs=(photo,)) for i in range(2)]
    out, infer_s = run_group(pipe, model, prompt_token_limit(pipe, model), reqs)
    plain, _ = run_group(pipe, model, prompt_token_limit(pipe, model), [_req(0, 64, 2, 1.0)])
    assert infer_s > 0 and all(isinstance(o, bytes) for o in out)
    pixels = [np.asarray(Image.open(io.BytesIO(o)), dtype=np.int16) for o in (*out, *plain)]
    assert np.abs(pixels[0] - pixels[2]).max() > 0  # the same seed, conditioned: not the same
