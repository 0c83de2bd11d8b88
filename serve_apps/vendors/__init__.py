"""vendors: the real HTTP clients of closed image-model APIs, called by the gateway.

`clients` holds both protocols (`OpenAIImagesClient`: one synchronous call; `QueueApiClient`:
submit, poll, fetch) behind one async interface, with pooled connections, one deadline per image,
retries with backoff and masked API keys. Locally they call a SIMULATED vendor (`simulators`)
exactly as they would call the real one.
"""

from __future__ import annotations

from serve_apps.vendors.clients import (
    ImageApiClient,
    OpenAIImagesClient,
    QueueApiClient,
    VendorConfigError,
    VendorError,
    VendorImage,
    make_client,
)

__all__ = [
    "ImageApiClient",
    "OpenAIImagesClient",
    "QueueApiClient",
    "VendorConfigError",
    "VendorError",
    "VendorImage",
    "make_client",
]
