"""The ground floor: the one config chain (a YAML file parsed into pydantic models).

Every stage imports this package; it imports no stage. Besides the schema it holds the few
helpers every stage shares: `cache` (the cache folder), `lazy` (lazy package exports),
`cli_types` (argparse types) and `shipped/` (the configs easel ships).

Every later stage (serving, load tests, evaluation, cost, manifests for KubeRay) reads these
objects; nothing downstream re-reads YAML. Unknown keys are errors (``extra="forbid"``), every
number has bounds, and cross-field checks run at load time, so a typo fails here with the file,
the key path and what is allowed.

One module per part of the file: `providers`, `models`, `workload` (niches, traffic, SLOs),
`scoring` (evaluation and cost), `compare` (regression-gate tolerances), `deploy` (serving,
routing, Kubernetes, operator), `root` (the whole file and its cross-section checks) and
`loading` (YAML in, errors out).
"""

from config._base import DNS_LABEL, ConfigError, Name, Strict
from config.compare import CompareConfig
from config.deploy import (
    GatewayDeployment,
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
    is_hub_id,
)
from config.providers import GpuType, ProviderConfig, ProviderKubernetes, Toleration
from config.root import EaselConfig
from config.scoring import CompositeAnchors, CostConfig, EvaluationConfig
from config.workload import (
    QUALITY_METRICS,
    REPLAY_FILLABLE,
    ConditioningConfig,
    NicheConfig,
    QualityMetric,
    SloConfig,
    TrafficConfig,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DIFFUSERS_PIPELINES",
    "DNS_LABEL",
    "PRODUCTION_EXAMPLE",
    "QUALITY_METRICS",
    "REFERENCE_PIPELINES",
    "REPLAY_FILLABLE",
    "ApiConfig",
    "Autoscaling",
    "Batching",
    "CompareConfig",
    "CompositeAnchors",
    "ConditioningConfig",
    "ConfigError",
    "CostConfig",
    "EaselConfig",
    "EvaluationConfig",
    "FloatRange",
    "GatewayDeployment",
    "GpuType",
    "IntRange",
    "KubernetesConfig",
    "LatencyDistribution",
    "ModelConfig",
    "Name",
    "NicheConfig",
    "OperatorConfig",
    "ProviderConfig",
    "ProviderKubernetes",
    "QualityMetric",
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
    "is_hub_id",
    "load_config",
    "parse_config",
    "shipped_config_path",
]
