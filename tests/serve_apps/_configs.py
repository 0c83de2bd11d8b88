"""Small configs for the Serve tests: closed models behind simulated vendors, no torch."""

from __future__ import annotations

from config import EaselConfig, load_config, parse_config

REFERENCES = {"max_count": 2, "max_pixels": 200 * 200, "max_bytes": 48 * 1024, "min_side": 16}


def api_model(name: str, p50: float, p95: float, **kw) -> dict:
    model = {
        "name": name,
        "display_name": name,
        "backend": "http_api",
        "kind": "closed",
        "steps": {"default": 1, "min": 1, "max": 1},
        "guidance": {"default": 0.0, "min": 0.0, "max": 0.0},
        "resolution": {"default": 64, "min": 32, "max": 128, "multiple": 16},
        "max_prompt_tokens": 40,
        "price_per_image": 0.04,
        "api": {
            "protocol": "openai_images",
            "vendor_model": name,
            "timeout_s": 10,
            "max_retries": 1,
            "backoff_s": 0.02,
            "simulated": {
                "latency": {"p50_ms": p50, "p95_ms": p95},
                "concurrency": 16,
                "failure_rate": 0.0,
                "seed": 3,
            },
        },
        "providers": ["lambda-sim", "runpod-sim"],
        "num_cpus": 0.05,
        "max_ongoing_requests": 16,
        "max_queued_requests": 32,
        "slo_ms": 2000,
    }
    model.update(kw)
    return model


def small_config() -> EaselConfig:
    data = load_config().model_dump(mode="json")
    data["name"] = "easel-ingress-test"
    data["models"] = [
        # api-fast takes up to two small reference images; api-mid takes none.
        api_model("api-fast", 15, 40, references=REFERENCES),
        # Tiny queues: 1 in service + 1 queued per provider, so a burst overflows at once.
        api_model(
            "api-slow",
            800,
            1000,
            max_ongoing_requests=1,
            max_queued_requests=1,
            references=REFERENCES,
        ),
        api_model("api-mid", 1500, 1800),
    ]
    data["traffic"]["model_mix"] = {}
    data["evaluation"]["anchors"]["human_anchor_model"] = "api-fast"
    data["routing"] = {
        "policy": "least_outstanding",
        "unhealthy_after_errors": 2,
        "recheck_after_s": 1.0,
        "request_timeout_s": 20,
    }
    data["serve"] = {
        "max_body_bytes": 64 * 1024,
        "max_reference_pixels": 256 * 256,
        "ingress_num_cpus": 0.1,
        "tenants": [
            {"name": "alpha", "api_key_env": "EASEL_TEST_ALPHA_KEY"},
            {
                "name": "beta",
                "api_key_env": "EASEL_TEST_BETA_KEY",
                "rate_limit_per_s": 0.2,
                "burst": 2,
                "models": ["api-fast"],
            },
        ],
    }
    return parse_config(data, "<small test config>")
