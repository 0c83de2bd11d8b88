"""easel: serve, load-test, score and price text-to-image models on Ray."""

from easel.config import ConfigError, EaselConfig, load_config

__all__ = ["ConfigError", "EaselConfig", "load_config"]
__version__ = "0.1.0"
