"""The provider catalogue: prices, bounds and hosted models come from the config."""

from __future__ import annotations

import datetime as dt

from cluster.providers import catalogue, format_catalogue, replica_bounds
from config import load_config, parse_config


def _cfg_with(**provider_updates: object):
    data = load_config().model_dump(mode="json")
    data["providers"][0].update(provider_updates)
    return parse_config(data)


def test_catalogue_follows_config():
    cfg = load_config()
    entries = catalogue(cfg, today=dt.date(2026, 12, 26))
    assert [e.name for e in entries] == [p.name for p in cfg.providers]
    for e, p in zip(entries, cfg.providers, strict=True):
        assert e.price_per_gpu_hour == p.price_per_gpu_hour
        assert e.resource == f"provider:{p.name}"
        assert e.price_age_days == (dt.date(2026, 12, 26) - p.price_date).days
        assert set(e.models) == {m.name for m in cfg.models if p.name in m.providers}


def test_replica_price_and_bounds_scale_with_gpus_per_replica():
    cfg = _cfg_with(gpus_per_replica=2, capacity=6, min_replicas=1, max_replicas=8)
    p = cfg.providers[0]
    assert replica_bounds(p) == (1, 3)  # capacity 6 GPUs / 2 per replica caps max_replicas 8
    e = catalogue(cfg)[0]
    assert e.price_per_replica_hour == 2 * p.price_per_gpu_hour
    assert (e.min_replicas, e.max_replicas) == (1, 3)


def test_capacity_below_min_replicas_caps_both():
    p = _cfg_with(capacity=1, min_replicas=3, max_replicas=5).providers[0]
    assert replica_bounds(p) == (1, 1)


def test_format_catalogue_names_every_provider_and_source():
    text = format_catalogue(catalogue(load_config()))
    for p in load_config().providers:
        assert p.name in text
        assert f"{p.price_per_gpu_hour:.2f}" in text
        assert p.price_source in text
