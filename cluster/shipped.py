"""The manifests of the configs easel ships, as committed under `k8s/`.

`k8s/<name>/` holds the manifests of a shipped config (one folder per provider, `gateway/`,
`bench/`) and `k8s/<name>/launcher/` its Ray cluster-launcher configs; a test renders them
afresh and compares, so they never drift from the configs. Re-render with
`easel k8s render --shipped`.
"""

from __future__ import annotations

from pathlib import Path

from cluster.kuberay import write_manifests
from cluster.launcher import write_launchers
from config import DEFAULT_CONFIG, PRODUCTION_EXAMPLE, load_config, shipped_config_path

__all__ = ["SHIPPED", "default_k8s_dir", "render_shipped"]

SHIPPED = {"default": DEFAULT_CONFIG, "production": PRODUCTION_EXAMPLE}


def default_k8s_dir() -> Path:
    """The repository's `k8s/` folder."""
    return Path(__file__).resolve().parents[1] / "k8s"


def render_shipped(root: str | Path | None = None) -> list[Path]:
    """Render every shipped config into `root/<name>/` (default: the repository's k8s/).

    Rendered YAML already there is replaced, so a renamed provider leaves no stale file.
    """
    root = Path(root) if root is not None else default_k8s_dir()
    written = []
    for name, config in SHIPPED.items():
        cfg = load_config(shipped_config_path(config))
        folder, launchers = root / name, root / name / "launcher"
        for old in folder.rglob("*.yaml"):
            old.unlink()
        for sub in sorted((d for d in folder.rglob("*") if d.is_dir()), reverse=True):
            if not any(sub.iterdir()):
                sub.rmdir()
        written += write_manifests(cfg, folder)
        written += write_launchers(cfg, launchers)
    return written
