"""Which requests of a collected batch share a forward pass, and that pass itself.

`@serve.batch` (in `model.py`) collects concurrent requests; here they are split into groups a
pipeline can run together (equal `ResolvedRequest.batch_key()`: same width, height, steps and
guidance, and the same reference images, the count included; each keeps its own seed and
prompt), prompts over the model's token limit are refused, and one group becomes one batched
pipeline call. Plain functions of a loaded pipeline: testable without Serve.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from config import ModelConfig
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.results import ErrorResult

__all__ = ["group_by_shape", "run_group"]


def group_by_shape(requests: Sequence[ResolvedRequest]) -> list[list[int]]:
    """Indices of `requests` grouped by `batch_key()` (shape and references), in arrival order."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, r in enumerate(requests):
        groups[r.batch_key()].append(i)
    return list(groups.values())


def _open_image(data: bytes) -> Any:
    """A reference (bytes the API checked: PNG, JPEG or WebP) as the RGB image a pipeline takes."""
    import io

    from PIL import Image

    from serve_apps.api.images import ALLOWED_FORMATS

    with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as img:
        return img.convert("RGB")


def run_group(
    pipe: Any, model: ModelConfig, token_limit: int, requests: Sequence[ResolvedRequest]
) -> tuple[list[bytes | ErrorResult], float]:
    """Check prompt lengths, run one forward pass for the rest, encode PNGs.

    Returns one PNG or ErrorResult per request, and the forward pass's seconds (0 when every
    prompt was refused). Runs on the replica's one inference thread: fast tokenizers are not
    safe to call from two threads at once, and the pipeline uses the same tokenizer.
    """
    from serve_apps.api.images import encode_png
    from serve_apps.provider.pipelines import count_prompt_tokens, generate

    out: list[bytes | ErrorResult | None] = [None] * len(requests)
    run = []
    for i, r in enumerate(requests):
        n = count_prompt_tokens(pipe, model, r.prompt)
        if n > token_limit:
            out[i] = ErrorResult(
                422,
                "prompt_too_long",
                f"prompt: {n} tokens for model {model.name!r}, above its limit of "
                f"{token_limit} (prompts are never truncated)",
                "client_error",
            )
        else:
            run.append(i)
    infer_s = 0.0
    if run:
        first = requests[run[0]]
        # One group shares its references (batch_key); decoding them is part of the pass.
        t0 = time.perf_counter()
        references = [_open_image(data) for data in first.references]
        images = generate(
            pipe,
            [requests[i].prompt for i in run],
            width=first.width,
            height=first.height,
            steps=first.steps,
            guidance=first.guidance,
            seeds=[requests[i].seed for i in run],
            negative_prompts=[requests[i].negative_prompt for i in run],
            images=references,
        )
        infer_s = time.perf_counter() - t0
        for i, img in zip(run, images, strict=True):
            out[i] = encode_png(img)
    return out, infer_s  # type: ignore[return-value]
