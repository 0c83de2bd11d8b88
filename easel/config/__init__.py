"""The one config chain: a YAML file parsed into pydantic models.

Every later stage (serving, load tests, evaluation, cost, manifests for KubeRay) reads these
objects; nothing downstream re-reads YAML. Unknown keys are errors (``extra="forbid"``), every
number has bounds, and cross-field checks run at load time, so a typo fails here with the file,
the key path and what is allowed.

One module per part of the file: `providers`, `models`, `workload` (niches, traffic, SLOs),
`scoring` (evaluation and cost), `deploy` (serving, routing, Kubernetes, operator), `root` (the
whole file and its cross-section checks) and `loading` (YAML in, errors out).
"""

from easel.config._base import ConfigError, Name, Strict
from easel.config.deploy import (
    KubernetesConfig,
    OperatorConfig,
    RoutingConfig,
    ServeConfig,
    Tenant,
)
from easel.config.loading import (
    DEFAULT_CONFIG,
    PRODUCTION_EXAMPLE,
    load_config,
    parse_config,
    shipped_config_path,
)
from easel.config.models import (
    DIFFUSERS_PIPELINES,
    ApiConfig,
    Autoscaling,
    Batching,
    FloatRange,
    IntRange,
    LatencyDistribution,
    ModelConfig,
    Resolution,
    SimulatedVendor,
)
from easel.config.providers import GpuType, ProviderConfig, Toleration
from easel.config.root import EaselConfig
from easel.config.scoring import CompositeAnchors, CostConfig, EvaluationConfig
from easel.config.workload import NicheConfig, SloConfig, TrafficConfig

__all__ = [
    "DEFAULT_CONFIG",
    "DIFFUSERS_PIPELINES",
    "PRODUCTION_EXAMPLE",
    "ApiConfig",
    "Autoscaling",
    "Batching",
    "CompositeAnchors",
    "ConfigError",
    "CostConfig",
    "EaselConfig",
    "EvaluationConfig",
    "FloatRange",
    "GpuType",
    "IntRange",
    "KubernetesConfig",
    "LatencyDistribution",
    "ModelConfig",
    "Name",
    "NicheConfig",
    "OperatorConfig",
    "ProviderConfig",
    "Resolution",
    "RoutingConfig",
    "ServeConfig",
    "SimulatedVendor",
    "SloConfig",
    "Strict",
    "Tenant",
    "Toleration",
    "TrafficConfig",
    "load_config",
    "parse_config",
    "shipped_config_path",
]
