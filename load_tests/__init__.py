"""load_tests: manifests, an open-loop Ray Data load runner, and latency under load.

The public surface is imported lazily so that `easel --help` (which imports
`easel.commands.load`) does not pay for pyarrow, aiohttp or Ray.
"""

from __future__ import annotations

from config.lazy import lazy_exports

__all__ = [
    "MANIFEST_SCHEMA",
    "REQUEST_SCHEMA",
    "LoadResult",
    "LoadSummary",
    "ManifestError",
    "SweepResult",
    "generate_manifest",
    "read_manifest",
    "run_load",
    "run_sweep",
    "summarize",
    "write_manifest",
]

_WHERE = {
    "MANIFEST_SCHEMA": "load_tests.manifest",
    "ManifestError": "load_tests.manifest",
    "read_manifest": "load_tests.manifest",
    "write_manifest": "load_tests.manifest",
    "generate_manifest": "load_tests.generators",
    "REQUEST_SCHEMA": "load_tests.records",
    "LoadResult": "load_tests.runner",
    "run_load": "load_tests.runner",
    "LoadSummary": "load_tests.stats",
    "summarize": "load_tests.stats",
    "SweepResult": "load_tests.sweep",
    "run_sweep": "load_tests.sweep",
}


__getattr__ = lazy_exports("load_tests", _WHERE)


def __dir__() -> list[str]:
    return sorted(__all__)
