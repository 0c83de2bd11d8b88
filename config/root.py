"""The whole config file: every section, and the checks that span sections."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Self

import yaml
from pydantic import Field, model_validator

from config._base import Name, Strict
from config.compare import CompareConfig
from config.deploy import KubernetesConfig, OperatorConfig, RoutingConfig, ServeConfig
from config.models import ModelConfig
from config.providers import GpuType, ProviderConfig
from config.scoring import CostConfig, EvaluationConfig
from config.workload import NicheConfig, SloConfig, TrafficConfig

__all__ = ["EaselConfig"]


class EaselConfig(Strict):
    """A whole benchmark or cluster, as one YAML file describes it."""

    name: Name
    description: str = ""
    seed: int = Field(default=0, ge=0)
    gpus: list[GpuType] = Field(min_length=1)
    providers: list[ProviderConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    niches: list[NicheConfig] = Field(min_length=1)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    operator: OperatorConfig = Field(default_factory=OperatorConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _cross_refs(self) -> Self:
        _unique("gpus", (g.name for g in self.gpus))
        _unique("providers", (p.name for p in self.providers))
        _unique("models", (m.name for m in self.models))
        _unique("niches", (n.name for n in self.niches))
        gpus = {g.name for g in self.gpus}
        providers = {p.name for p in self.providers}
        models = {m.name for m in self.models}
        for p in self.providers:
            if p.gpu not in gpus:
                raise ValueError(
                    f"provider {p.name!r}: gpu {p.gpu!r} is not in gpus (allowed: {sorted(gpus)})"
                )
        for m in self.models:
            for prov in m.providers:
                if prov not in providers:
                    raise ValueError(
                        f"model {m.name!r}: provider {prov!r} is not defined "
                        f"(allowed: {sorted(providers)})"
                    )
        unknown = set(self.traffic.model_mix) - models
        if unknown:
            raise ValueError(
                f"traffic.model_mix names unknown models {sorted(unknown)} (allowed: "
                f"{sorted(models)})"
            )
        for kind, aliases, known in (
            ("model", self.traffic.model_aliases, models),
            ("niche", self.traffic.niche_aliases, {n.name for n in self.niches}),
        ):
            bad = {k: v for k, v in aliases.items() if v not in known}
            if bad:
                raise ValueError(
                    f"traffic.{kind}_aliases map to unknown {kind}s {bad} "
                    f"(allowed: {sorted(known)})"
                )
        anchor = self.evaluation.anchors.human_anchor_model
        if anchor is not None and anchor not in models:
            raise ValueError(
                f"evaluation.anchors.human_anchor_model {anchor!r} is not a model "
                f"(allowed: {sorted(models)})"
            )
        unknown = set(self.routing.weights) - providers
        if unknown:
            raise ValueError(
                f"routing.weights names unknown providers {sorted(unknown)} (allowed: "
                f"{sorted(providers)})"
            )
        for t in self.serve.tenants:
            if t.models and set(t.models) - models:
                raise ValueError(
                    f"tenant {t.name!r} names unknown models {sorted(set(t.models) - models)}"
                )
        return self

    def model(self, name: str) -> ModelConfig:
        """The model called `name`; KeyError naming the known ones otherwise."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"unknown model {name!r}; known: {[m.name for m in self.models]}")

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(f"unknown provider {name!r}; known: {[p.name for p in self.providers]}")

    def niche(self, name: str) -> NicheConfig:
        for n in self.niches:
            if n.name == name:
                return n
        raise KeyError(f"unknown niche {name!r}; known: {[n.name for n in self.niches]}")

    def gpu(self, name: str) -> GpuType:
        for g in self.gpus:
            if g.name == name:
                return g
        raise KeyError(f"unknown gpu {name!r}; known: {[g.name for g in self.gpus]}")

    def to_yaml(self) -> str:
        """The resolved config (defaults filled in) as YAML, for a run folder."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def digest(self) -> str:
        """A short hash of the resolved config, for reproducibility blocks and cache keys."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _unique(section: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{section}: name {n!r} appears twice")
        seen.add(n)
