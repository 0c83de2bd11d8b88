"""easel: the top floor. The CLI, the `bench` pipeline, cost and the report.

This is the one package that may import every stage (config → cluster → serve_apps →
load_tests → evaluation); no stage imports it. The config chain every stage reads lives on the
ground floor, in the `config` package.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
