"""``omgate pki dev``: certificates for development."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.commands.arguments import add_file
from service.commands.command import Command
from service.exitcodes import EXIT_OK, EXIT_PROBLEMS


def _arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    dev = actions.add_parser(
        "dev", help="a development server certificate and a Salesforce-like client chain",
        description="Create a development CA and a server certificate for localhost, and a "
                    "client chain (root, intermediate, leaf) shaped like Salesforce's.",
    )
    add_file(dev, "--out", default=Path("certs/dev"), metavar="DIR",
             help="folder to write into (default certs/dev)")
    dev.add_argument("--force", action="store_true", help="replace existing files")


def _run(args: argparse.Namespace) -> int:
    from service.tools.pki import PkiError, write_dev_pki

    try:
        written = write_dev_pki(args.out, force=args.force)
    except PkiError as error:
        print(f"omgate pki dev: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    for path in written:
        print(f"wrote {path}")
    out = args.out
    print(f"""
Configuration lines that trust the development client chain (config/omgate.toml; paths
are relative to the config file's folder):

[client_auth]
trust = ["{Path("..") / out / "client-ca.pem"}"]

Send a message with that client chain to a running server:

omgate send https://localhost:8443/salesforce/outbound --generate Account \\
  --ca {out / "ca.pem"} --client-cert {out / "client-chain.pem"} \\
  --client-key {out / "client.key"}""")
    return EXIT_OK


COMMAND = Command("pki", "certificates for development", _arguments, _run)
