"""The provider app: what each provider's own Ray cluster runs.

An ingress deployment with easel's native API (`ingress`) and one Serve application per
self-hosted model the provider serves (`model`: the diffusers backend, its own HTTP route in
`model_route`, with `batcher` grouping requests into forward passes and `pipelines` loading and
calling them; the tiny model zoo in `tiny/`), and the provider's usage ledger (`usage`).
`app_builder` and `model_app_builder` are the Serve import paths
(`serve_apps.provider:app_builder`, args `{config, provider}`;
`serve_apps.provider:model_app_builder`, args `{config, provider, model}`); imported lazily so
that importing this package loads neither Ray nor torch.
"""

from __future__ import annotations

from config.lazy import lazy_exports

__all__ = ["app_builder", "build_provider_apps", "model_app_builder", "provider_models"]

__getattr__ = lazy_exports(
    "serve_apps.provider",
    {
        "app_builder": "serve_apps.provider.app",
        "build_provider_apps": "serve_apps.provider.app",
        "model_app_builder": "serve_apps.provider.app",
        "provider_models": "serve_apps.provider.app",
    },
)
