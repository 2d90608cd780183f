"""The operator's tools as an integration engineer meets them: certificate files as
consoles offer them, shell completion, and what the documentation promises."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from harness import run_omgate


def inspected(path, config) -> tuple[int, dict]:
    result = run_omgate("inspect", str(path), "--config", str(config), "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_inspect_reads_der_and_pkcs7_files_as_consoles_offer_them(client_pki, tmp_path):
    config = tmp_path / "omgate.toml"
    config.write_text(f'[client_auth]\ntrust = ["{client_pki.root_file}"]\n')
    valid = client_pki.cases["valid"]
    chain = x509.load_pem_x509_certificates(valid.chain.read_bytes())
    files = {
        "leaf.der": chain[0].public_bytes(Encoding.DER),
        "leaf.cer": chain[0].public_bytes(Encoding.DER),
        "chain.p7b": pkcs7.serialize_certificates(chain, Encoding.PEM),
        "chain.p7c": pkcs7.serialize_certificates(chain, Encoding.DER),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    as_pem = {"leaf": inspected(valid.leaf, config), "chain": inspected(valid.chain, config)}
    for name in files:
        kind = name.split(".")[0]
        status, document = inspected(tmp_path / name, config)
        assert (status, document) == as_pem[kind], name
    assert as_pem["chain"][0] == 0  # the bundle's chain is accepted, as its PEM form is

    (tmp_path / "notes.txt").write_text("not a certificate")
    refused = run_omgate("inspect", str(tmp_path / "notes.txt"), "--config", str(config))
    assert refused.returncode == 2
    assert "holds no certificate (PEM, DER or PKCS#7)" in refused.stderr
