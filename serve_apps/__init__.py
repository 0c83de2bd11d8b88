"""serve_apps: what answers requests, as the federation runs it.

- `gateway/`: the API customers call; routes each request to provider clusters and closed-model
  vendors over HTTP, with weights, drains, health, failover and tenants; N processes or replicas,
  routing state in each.
- `provider/`: the provider apps each provider's own Ray cluster runs: an ingress
  (`serve_apps.provider:app_builder`, args `{config, provider}`) and one Serve application per
  model (`serve_apps.provider:model_app_builder`, its deployment the HTTP ingress of the route
  the gateway sends to), the diffusers backend and batcher, the usage ledger, the tiny model zoo.
- `vendors/`: the real OpenAI-images and queue clients (the gateway's upstreams for closed models).
- `api/`: the HTTP contract both tiers speak (schemas, errors, images, response metadata).
- `local/`: the local modes: providers as Serve apps of one Ray (default) or as separate Ray
  clusters (`--isolated`), simulated vendors, and the gateway, started and stopped together.

Imported lazily, so `easel --help` loads neither Ray nor torch.
"""

from __future__ import annotations

__all__ = ["api", "gateway", "local", "provider", "vendors"]
