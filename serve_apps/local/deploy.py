"""Deploy one provider's app on the Ray cluster of `RAY_ADDRESS`, then exit (it keeps serving).

`python -m serve_apps.local.deploy --config F --provider P --port N`: what `IsolatedProviders`
runs once per provider cluster, in that cluster's environment (its address and auth token), as
a Serve config with the provider's applications would (`easel k8s render` writes that one for
KubeRay). Serve's proxy binds 127.0.0.1:N; the ingress is at `/`, each model at `/models/<model>`.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_apps.local.deploy")
    parser.add_argument("--config", required=True)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from config import load_config
    from serve_apps.provider.app import build_provider_apps

    ray.init(log_to_driver=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    apps = build_provider_apps(load_config(args.config), args.provider, name="provider")
    serve.run_many(
        [serve.RunTarget(target=a.app, name=a.name, route_prefix=a.route_prefix) for a in apps],
        wait_for_applications_running=True,
    )
    print(f"provider {args.provider} serving on http://{args.host}:{args.port}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
