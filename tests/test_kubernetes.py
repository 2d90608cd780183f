"""config/examples/kubernetes: manifests valid for Kubernetes, and an omgate.toml that decides
on the client certificate as the ingress-nginx controller forwards it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import kubernetes_validate
import pytest
import yaml
from harness import PAYLOADS, ROOT, SOAP_HEADERS, free_port, is_ack, merge
from httpx import Client

EXAMPLE = ROOT / "config" / "examples" / "kubernetes"
# the newest schemas the pinned kubernetes-validate ships, and an older release still met
SCHEMA_VERSIONS = (kubernetes_validate.latest_version(), "1.30.0")
BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


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


def test_the_example_config_decides_on_the_certificate_the_controller_forwards(
        omgate_server, client_pki, tmp_path):
    ca_bundle = tmp_path / "ca.crt"  # the Secret omgate-client-ca's ca.crt
    ca_bundle.write_bytes(client_pki.root.pem() + client_pki.intermediate.pem())
    plain = f"127.0.0.1:{free_port()}"
    server = omgate_server(merge(example_config(), {
        "server": {"plain_bind": [plain], "health_bind": f"127.0.0.1:{free_port()}",
                   "trusted_proxies": ["127.0.0.1/32"]},  # the controller, in the test
        "client_auth": {"trust": [ca_bundle]},
    }))

    def as_the_controller_forwards(case: str) -> int:
        leaf = Path(client_pki.cases[case].leaf).read_text()
        # as nginx's $ssl_client_escaped_cert writes it: URL-escaped PEM
        headers = {**SOAP_HEADERS, "ssl-client-cert": quote(leaf, safe=""),
                   "X-Forwarded-For": "203.0.113.9"}
        with Client(base_url=f"http://{plain}", timeout=20) as client:
            response = client.post("/salesforce/outbound", content=BODY, headers=headers)
        return 200 if is_ack(response) else response.status_code

    assert as_the_controller_forwards("valid") == 200
    accepted = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "accept")
    assert accepted["source"] == "forwarded"
    assert accepted["peer"].startswith("203.0.113.9:")  # the client the controller names
    assert accepted["chain"][0]["subject"] == "CN=valid.client.test,O=Salesforce-like test"

    assert as_the_controller_forwards("untrusted") == 403
    refused = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    assert refused["source"] == "forwarded"
    # the leaf alone, from an issuer the bundle does not hold
    assert [finding["code"] for finding in refused["findings"]] == ["missing_intermediate"]


