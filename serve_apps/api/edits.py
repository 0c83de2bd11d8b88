"""`POST /v1/images/edits`: the OpenAI Images API's multipart form, with reference images.

The OpenAI shape: form fields (`model`, `prompt`, `n`, `size`, `response_format`, ...) and one
file part `image` or several `image[]` parts; easel's extensions (`seed`, `steps`, `guidance`,
`negative_prompt`, `niche`) ride as form fields too. The form is read within the body cap and
checked like a JSON body: unknown fields, a `mask` (no inpainting here), a file part that is not
an image type, or no image at all are 4xx errors that say what to send.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from serve_apps.api.errors import ApiError, validation_message
from serve_apps.api.schemas import MAX_REFERENCES, ImagesRequest, read_capped_body

__all__ = ["IMAGE_CONTENT_TYPES", "read_edits_form"]

# What a file part may declare; application/octet-stream (what clients send for bare bytes) is
# let through to the decoder, which opens PNG, JPEG and WebP only.
IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")
_IMAGE_KEYS = ("image", "image[]")
_MAX_FIELDS = 32


async def read_edits_form(
    request: Request, max_bytes: int, timeout_s: float = 10.0
) -> tuple[ImagesRequest, list[bytes]]:
    """The edits form as an `ImagesRequest` and the raw bytes of its image parts, in order.

    Raises:
        ApiError: 415 (not multipart, or a file part that is not an image type), 413 (over
            `max_bytes`), 408 (still arriving after `timeout_s`), 400 (a malformed form, no
            image), 422 (unknown or invalid fields, `mask`, more than MAX_REFERENCES images).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise ApiError(
            415,
            f"Content-Type {ctype or 'none'!r} is not accepted here; send multipart/form-data "
            "with the image(s) as 'image' or 'image[]' file parts",
        )
    raw = await read_capped_body(request, max_bytes, timeout_s)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    copy = Request(request.scope, replay)
    try:
        form = await copy.form(
            max_files=MAX_REFERENCES + 1, max_fields=_MAX_FIELDS, max_part_size=max_bytes
        )
    except ApiError:
        raise
    except Exception as exc:  # python-multipart / Starlette parse errors
        raise ApiError(400, f"malformed multipart form ({exc})", code="invalid_form") from None
    fields: dict[str, str] = {}
    images: list[bytes] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key == "mask":
                raise ApiError(
                    422,
                    "mask: not supported (easel's models take reference images, not inpainting "
                    "masks); send the image(s) only",
                    code="unsupported_input",
                )
            if key not in _IMAGE_KEYS:
                raise ApiError(422, f"{key}: unexpected file part; images go in 'image[]'")
            declared = (value.content_type or "application/octet-stream").lower()
            if declared.split(";")[0].strip() not in IMAGE_CONTENT_TYPES:
                raise ApiError(
                    415,
                    f"{key} part {len(images)}: content type {declared!r} is not an accepted "
                    "image type (allowed: image/png, image/jpeg, image/webp)",
                    code="unsupported_image_format",
                )
            images.append(await value.read())
        elif key in _IMAGE_KEYS:
            raise ApiError(422, f"{key}: must be a file part (multipart), not a text field")
        elif key in fields:
            raise ApiError(422, f"{key}: given more than once")
        else:
            fields[key] = str(value)
    await form.close()
    if not images:
        raise ApiError(
            400, "no image: send one 'image' file part or several 'image[]' parts",
            code="invalid_request",
        )  # fmt: skip
    if len(images) > MAX_REFERENCES:
        raise ApiError(422, f"image[]: {len(images)} images, at most {MAX_REFERENCES}")
    try:
        body = ImagesRequest.model_validate(fields)
    except ValidationError as exc:
        raise ApiError(422, validation_message(list(exc.errors()))) from None
    return body, images
