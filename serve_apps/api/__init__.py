"""The HTTP API both tiers speak: the gateway to customers, each provider app to the gateway.

`schemas` (request models, per-model limits), `requests` (reading a request off the wire),
`responses` (image metadata as headers or JSON, model cards), `paths` (a provider's routes),
`errors` (the `{"error": {"code", "message"}}` shape), `images` (safe image decoding) and
`outcomes` (whose fault a failed attempt was).
"""

from __future__ import annotations

__all__ = ["errors", "images", "outcomes", "paths", "requests", "responses", "schemas"]
