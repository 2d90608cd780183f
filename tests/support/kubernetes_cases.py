"""What tests/unit/test_kubernetes.py and tests/system/test_kubernetes_system.py share."""

from __future__ import annotations

import tomllib
from typing import Any

import yaml
from harness import ROOT

EXAMPLE = ROOT / "config" / "examples" / "kubernetes"


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())


def resources() -> dict[str, dict[str, Any]]:
    """Every resource kustomization.yaml lists, by kind."""
    found = {}
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((EXAMPLE / name).read_text()):
            found[document["kind"]] = document
    return found


def example_config() -> dict[str, Any]:
    return tomllib.loads((EXAMPLE / "omgate.toml").read_text())


CONTROLLER_PREFIX = "nginx.ingress.kubernetes.io/"
