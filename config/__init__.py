"""The ground floor: the one config chain (a YAML file parsed into pydantic models).

Every stage imports this package; it imports no stage. Besides the schema it holds the few
helpers every stage shares: `cache` (the cache folder), `lazy` (lazy package exports),
`cli_types` (argparse types) and `shipped/` (the configs easel ships).

Every later stage (serving, load tests, evaluation, cost, manifests for KubeRay) reads these
objects; nothing downstream re-reads YAML. Unknown keys are errors (``extra="forbid"``), every
number has bounds, and cross-field checks run at load time, so a typo fails here with the file,
the key path and what is allowed.

One module per part of the file: `providers`, `models`, `workload` (niches, traffic, SLOs),
`scoring` (evaluation and cost), `deploy` (serving, routing, Kubernetes, operator), `root` (the
whole file and its cross-section checks) and `loading` (YAML in, errors out).
"""

from config._base import ConfigError, Name, Strict
from config.deploy import (
    KubernetesConfig,
    OperatorConfig,
    RoutingConfig,
    ServeConfig,
    Tenant,
)
from config.loading import (
    DEFAULT_CONFIG,
    PRODUCTION_EXAMPLE,
    load_config,
    parse_config,
    shipped_config_path,
)
from config.models import (
    DIFFUSERS_PIPELINES,
    REFERENCE_PIPELINES,
    ApiConfig,
    Autoscaling,
    Batching,
    FloatRange,
    IntRange,
    LatencyDistribution,
    ModelConfig,
    ReferenceLimits,
    Resolution,
    SimulatedVendor,
)
from config.providers import GpuType, ProviderConfig, Toleration
from config.root import EaselConfig
from config.scoring import CompositeAnchors, CostConfig, EvaluationConfig
from config.workload import NicheConfig, SloConfig, TrafficConfig

__all__ = [
    "DEFAULT_CONFIG",
    "DIFFUSERS_PIPELINES",
    "PRODUCTION_EXAMPLE",
    "REFERENCE_PIPELINES",
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
    "ReferenceLimits",
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
