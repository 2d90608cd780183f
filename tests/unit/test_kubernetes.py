"""config/examples/kubernetes, read: manifests valid for Kubernetes that fit together and with
their omgate.toml, and a README that says what each value depends on."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_cases import CONTROLLER_PREFIX, EXAMPLE, example_config, kustomization, resources

# the newest schemas the pinned kubernetes-validate ships, and an older release still met
SCHEMA_VERSIONS = (kubernetes_validate.latest_version(), "1.30.0")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("kind", ["Namespace", "Deployment", "Service", "Ingress",
                                  "NetworkPolicy"])
def test_each_manifest_matches_the_kubernetes_schema(kind, version):
    kubernetes_validate.validate(resources()[kind], version, strict=True)


def port_of(bind: str) -> int:
    return int(bind.rpartition(":")[2])


def test_the_manifests_fit_together_and_with_omgate_toml():
    found, config = resources(), example_config()
    pod = found["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": port_of(config["server"]["plain_bind"][0]),
                     "health": port_of(config["server"]["health_bind"])}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    [inbox_url] = [item for item in container["env"] if item["name"] == "OMGATE_INBOX__URL"]
    assert "secretKeyRef" in inbox_url["valueFrom"]

    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    [generated] = kustomization()["configMapGenerator"]
    assert generated["files"] == ["omgate.toml"]
    assert volumes["config"]["configMap"]["name"] == generated["name"]
    assert mounts["config"] == "/etc/omgate"  # the image's OMGATE_CONFIG is in there
    [trust] = config["client_auth"]["trust"]
    ca_secret = volumes["client-ca"]["secret"]
    assert trust == f"{mounts['client-ca']}/{ca_secret['items'][0]['path']}"

    annotations = found["Ingress"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    namespace = kustomization()["namespace"]
    assert annotations[prefix + "auth-tls-secret"] == f"{namespace}/{ca_secret['secretName']}"
    assert annotations[prefix + "auth-tls-verify-client"] == "optional_no_ca"
    assert annotations[prefix + "auth-tls-pass-certificate-to-upstream"] == "true"
    assert config["client_auth"]["forwarded_cert"] == "pem-header:ssl-client-cert"

    service = found["Service"]
    [rule] = found["Ingress"]["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)
    assert service["spec"]["selector"].items() <= pod_labels(found).items()
    policy = found["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels(found).items()


def pod_labels(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    return found["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_the_error_page_names_the_location_the_snippet_defines():
    annotations = resources()["Ingress"]["metadata"]["annotations"]
    snippet = annotations[CONTROLLER_PREFIX + "server-snippet"]
    [target] = re.findall(r"^error_page 495 496 = (@\w+);$", snippet, re.MULTILINE)
    assert re.search(rf"^location {target} {{$", snippet, re.MULTILINE)


def test_the_readme_says_what_each_value_depends_on():
    """Every key omgate.toml sets and every annotation of the Ingress has its row."""
    readme = (EXAMPLE / "README.md").read_text()
    section = readme.split("## What each value depends on", 1)[1].split("\n## ", 1)[0]
    named = {name for row in re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE)
             for name in re.findall(r"`([^`]+)`", row)}
    keys = {key for table in example_config().values() for key in table}
    annotations = {name.removeprefix(CONTROLLER_PREFIX)
                   for name in resources()["Ingress"]["metadata"]["annotations"]}
    assert keys | annotations <= named, (keys | annotations) - named
    assert "**must be edited**" in section.split("| `trusted_proxies` |", 1)[1].split("\n")[0]
