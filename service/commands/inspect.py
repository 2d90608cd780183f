"""``omgate inspect``: a client certificate chain file analysed against the policy."""

from __future__ import annotations

import argparse
import sys

from service.commands.arguments import add_config, add_file, load
from service.commands.command import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_file(parser, "pemfile", metavar="PEMFILE",
             help="the chain, leaf first, as the client would send it: PEM, DER "
                  "or PKCS#7 (.p7b, .p7c)")
    add_config(parser)
    add_file(parser, "--trust", metavar="PEM",
             help="trust anchors to use instead of client_auth.trust")
    parser.add_argument("--endpoint", metavar="PATH",
                        help="use this endpoint's [endpoints.client_auth] rules")
    parser.add_argument("--json", action="store_true", help="findings as JSON")


def _run(args: argparse.Namespace) -> int:
    from service.tools.inspect import inspect_chain

    return inspect_chain(args.pemfile, load(args), sys.stdout, endpoint=args.endpoint,
                         trust=args.trust, as_json=args.json)


COMMAND = Command(
    "inspect", "analyse a client certificate chain file against the policy", _arguments, _run,
    description="Analyse the certificates in PEMFILE, in file order, as if a client had "
                "presented them: every finding with its fix, against the configuration's "
                "[client_auth] rules. Exit status 1 when the chain would be refused.",
    epilog="Example: omgate inspect salesforce-chain.pem --trust digicert-root.pem",
)
