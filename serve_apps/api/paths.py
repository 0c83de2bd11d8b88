"""Where a provider cluster answers what: its ingress at its endpoint, each model at its own route.

A provider's endpoint (`providers[].endpoint`, or the local modes' Serve route) serves the
provider ingress's API (`/v1/generate`, `/v1/models`, `/healthz`, `/readyz`, `/v1/stats`, ...);
each self-hosted model it serves also answers `POST <endpoint>/models/<model>/v1/generate`
straight from its deployment (one Serve hop): the route the gateway sends generate requests to.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["MODELS_PATH", "model_generate_url", "model_route_prefix", "models_route_prefix"]

MODELS_PATH = "models"


def models_route_prefix(provider_prefix: str) -> str:
    """The route prefix under which a provider at `provider_prefix` (a Serve route prefix such
    as `/` or `/lambda-sim`, or an endpoint URL) serves its models; an application mounted
    here (local mode's shared tiny replica) answers for several models by path."""
    return f"{provider_prefix.rstrip('/')}/{MODELS_PATH}"


def model_route_prefix(provider_prefix: str, model: str) -> str:
    """The route prefix of `model`'s own application under a provider at `provider_prefix`."""
    return f"{models_route_prefix(provider_prefix)}/{quote(model, safe='')}"


def model_generate_url(endpoint: str, model: str) -> str:
    """`model`'s generate URL at the provider `endpoint`."""
    return f"{model_route_prefix(endpoint, model)}/v1/generate"
