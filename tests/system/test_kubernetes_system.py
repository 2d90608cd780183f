"""config/examples/kubernetes, run: the example omgate.toml decides on the client certificate
as the ingress-nginx controller forwards it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from behind_proxy import Daemons, client_context, post
from client_pki import ClientCase
from cryptography import x509
from harness import PAYLOADS, SOAP_HEADERS, free_port, is_ack, merge, require_executable
from httpx import Client
from kubernetes_cases import CONTROLLER_PREFIX, example_config, kustomization, resources

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


def shipped_config_with(tmp_path: Path, client_pki, **server: Any) -> dict[str, Any]:
    """The example's omgate.toml with only addresses and files changed: the Secret's
    ca.crt (root and intermediate) in a file here, and ``server`` keys."""
    ca_bundle = tmp_path / "ca.crt"
    ca_bundle.write_bytes(client_pki.root.pem() + client_pki.intermediate.pem())
    return merge(example_config(), {
        "server": {"plain_bind": [f"127.0.0.1:{free_port()}"],
                   "health_bind": f"127.0.0.1:{free_port()}", **server},
        "client_auth": {"trust": [ca_bundle]},
    })


def as_the_controller_forwards(plain: str, leaf: Path) -> int:
    """POST with the leaf in ssl-client-cert as nginx's $ssl_client_escaped_cert writes it
    (URL-escaped PEM), and the client's address in X-Forwarded-For; 200 for an ack."""
    headers = {**SOAP_HEADERS, "ssl-client-cert": quote(leaf.read_text(), safe=""),
               "X-Forwarded-For": "203.0.113.9"}
    with Client(base_url=f"http://{plain}", timeout=20) as client:
        response = client.post("/salesforce/outbound", content=BODY, headers=headers)
    return 200 if is_ack(response) else response.status_code


def test_the_example_config_decides_on_the_certificate_the_controller_forwards(
        omgate_server, client_pki, tmp_path):
    """In "request" mode, as shipped, a certificate the policy refuses is acknowledged and
    logged as a would-be rejection; "require", once the log shows what Salesforce sends,
    refuses it."""
    config = shipped_config_with(tmp_path, client_pki,
                                 trusted_proxies=["127.0.0.1/32"])  # the controller, here
    assert config["client_auth"]["mode"] == "request"
    server = omgate_server(config)
    [plain] = config["server"]["plain_bind"]

    assert as_the_controller_forwards(plain, client_pki.cases["valid"].leaf) == 200
    accepted = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "accept")
    assert accepted["source"] == "forwarded"
    assert accepted["peer"].startswith("203.0.113.9:")  # the client the controller names
    assert accepted["chain"][0]["subject"] == "CN=valid.client.test,O=Salesforce-like test"

    assert as_the_controller_forwards(plain, client_pki.cases["untrusted"].leaf) == 200
    logged = server.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    assert logged["source"] == "forwarded" and logged["would_reject"] is True
    # the leaf alone, from an issuer the bundle does not hold
    assert [finding["code"] for finding in logged["findings"]] == ["missing_intermediate"]

    switched = merge(shipped_config_with(tmp_path, client_pki, trusted_proxies=["127.0.0.1/32"]),
                     {"client_auth": {"mode": "require"}})
    enforcing = omgate_server(switched)
    [plain] = switched["server"]["plain_bind"]
    assert as_the_controller_forwards(plain, client_pki.cases["untrusted"].leaf) == 403
    refused = enforcing.wait_for("client_auth.decision", lambda e: e["outcome"] == "reject")
    assert refused["enforced"] is True
    assert [finding["code"] for finding in refused["findings"]] == ["missing_intermediate"]


def test_an_unedited_trusted_proxies_says_whose_header_it_dropped(omgate_server, client_pki,
                                                                  tmp_path):
    """trusted_proxies must be the controller pods' addresses. Left as shipped on a cluster
    where they are elsewhere, the first message is still acknowledged ("request"), and its
    decision names the controller's address and the header omgate did not believe."""
    config = shipped_config_with(tmp_path, client_pki)
    assert config["server"]["trusted_proxies"] == ["10.244.0.0/16"]
    server = omgate_server(config)
    [plain] = config["server"]["plain_bind"]
    assert as_the_controller_forwards(plain, client_pki.cases["valid"].leaf) == 200
    decision = server.wait_for("client_auth.decision")
    codes = {finding["code"]: finding for finding in decision["findings"]}
    assert decision["would_reject"] is True and "no_client_cert" in codes
    untrusted = codes["forwarded_from_untrusted_peer"]
    assert "127.0.0.1" in untrusted["message"] and "ssl-client-cert" in untrusted["message"]


def upstream_name(namespace: str, backend: dict[str, Any]) -> str:
    """The controller's name for an Ingress backend: namespace-service-port."""
    port = backend["port"].get("number") or backend["port"]["name"]
    return f"{namespace}-{backend['name']}-{port}"


def controller_nginx_conf(run_dir: Path, listen: str, server_files: tuple[Path, Path],
                          ca_bundle: Path, omgate_plain: str) -> str:
    """The nginx configuration ingress-nginx writes for the example's Ingress, as its
    template (rootfs/etc/nginx/template/nginx.tmpl) does for these annotations: the
    server's auth-tls directives and server-snippet, a location per path with the
    certificate header and the body size, proxied to the Service's endpoints (here, the one
    omgate), and the default backend's 404 for every other path."""
    ingress = resources()["Ingress"]
    annotations = {name.removeprefix(CONTROLLER_PREFIX): value
                   for name, value in ingress["metadata"]["annotations"].items()}
    [rule] = ingress["spec"]["rules"]
    error_page = annotations.get("auth-tls-error-page")
    lines = [
        f"pid {run_dir}/nginx.pid;",
        "events { worker_connections 64; }",
        "http {",
        "  access_log off;",
        *(f"  {kind}_temp_path {run_dir}/{kind};"
          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        f"  upstream upstream_balancer {{ server {omgate_plain}; }}",
        "  server {",
        f"    listen {listen} ssl;",
        f"    server_name {rule['host']} localhost;",
        f"    ssl_certificate {server_files[0]};",
        f"    ssl_certificate_key {server_files[1]};",
        f"    ssl_client_certificate {ca_bundle};",
        f"    ssl_verify_client {annotations.get('auth-tls-verify-client', 'on')};",
        f"    ssl_verify_depth {annotations.get('auth-tls-verify-depth', '1')};",
        *([f"    error_page 495 496 = {error_page};"] if error_page else []),
        annotations.get("server-snippet", ""),
    ]
    namespace = kustomization()["namespace"]
    for path in rule["http"]["paths"]:
        match = "= " if path["pathType"] == "Exact" else ""
        lines += [
            f"    location {match}{path['path']} {{",
            f"      set $proxy_upstream_name "
            f"\"{upstream_name(namespace, path['backend']['service'])}\";",
            f"      client_max_body_size {annotations.get('proxy-body-size', '1m')};",
            "      proxy_set_header X-Forwarded-For $remote_addr;",
            *(["      proxy_set_header ssl-client-cert $ssl_client_escaped_cert;"]
              if annotations.get("auth-tls-pass-certificate-to-upstream") == "true" else []),
            "      proxy_pass http://upstream_balancer;",
            "    }",
        ]
    lines += ["    location / { return 404; }", "  }", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def ingress_controller(tmp_path, dev_pki):
    binary = require_executable("nginx")
    daemons = Daemons()

    def start(ca_bundle: Path, omgate_plain: str) -> int:
        port = free_port()
        run_dir = tmp_path / "controller"
        run_dir.mkdir()
        config = run_dir / "nginx.conf"
        config.write_text(controller_nginx_conf(
            run_dir, f"127.0.0.1:{port}", (dev_pki / "server.pem", dev_pki / "server.key"),
            ca_bundle, omgate_plain))
        log = run_dir / "error.log"
        return daemons.start([binary, "-c", str(config), "-p", str(run_dir), "-e", str(log),
                              "-g", "daemon off;"], port, log)

    yield start
    daemons.stop()


def test_certificates_the_controller_refuses_itself_reach_omgate(
        omgate_server, ingress_controller, client_pki, dev_pki, tmp_path):
    """ingress-nginx refuses an expired certificate and one not for client authentication
    by itself (its "400 The SSL certificate error" page, which Salesforce would get and
    omgate never hear of): the Ingress hands both to omgate, which acknowledges them in
    "request" mode and logs why "require" would not."""
    config = shipped_config_with(tmp_path, client_pki, trusted_proxies=["127.0.0.1/32"])
    server = omgate_server(config)
    [plain] = config["server"]["plain_bind"]
    [ca_bundle] = config["client_auth"]["trust"]
    url = f"https://localhost:{ingress_controller(ca_bundle, plain)}/salesforce/outbound"

    presented = {"expired": client_pki.cases["expired"],
                 "server certificate": ClientCase("server", dev_pki / "server.pem",
                                                  dev_pki / "server.pem",
                                                  dev_pki / "server.key", None)}
    for label, case in presented.items():
        answer = post(url, client_context(dev_pki / "ca.pem", case))
        assert is_ack(answer), (label, answer.status_code, answer.text[:300])
        subject = x509.load_pem_x509_certificate(case.leaf.read_bytes()).subject
        decision = server.wait_for("client_auth.decision", lambda e, s=subject: e.get(
            "chain") and e["chain"][0]["subject"] == s.rfc4514_string())
        assert decision["source"] == "forwarded", label
        assert decision["would_reject"] is True, label
        assert decision["peer"].startswith("127.0.0.1:")  # the client the controller saw
    assert "expired" in [f["code"] for f in server.wait_for(
        "client_auth.decision", lambda e: e["chain"] and "expired" in e["chain"][0]["subject"]
    )["findings"]]

    # the valid chain passes as before, and the error page exposes no other path
    assert is_ack(post(url, client_context(dev_pki / "ca.pem", client_pki.cases["valid"])))
    other = httpx.post(url.replace("/salesforce/outbound", "/metrics"), content=BODY,
                       verify=client_context(dev_pki / "ca.pem", client_pki.cases["expired"]),
                       timeout=20)
    assert other.status_code == 404 and "<Ack>" not in other.text
