"""``omgate probe``: connect to a deployed endpoint as Salesforce would."""

from __future__ import annotations

import argparse
import sys

from service.commands.arguments import add_file, positive
from service.commands.command import Command
from service.exitcodes import EXIT_USAGE


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL")
    add_file(parser, "--ca", metavar="PEM", help="roots to trust instead of the public ones")
    add_file(parser, "--client-cert", metavar="PEM",
             help="present this certificate chain (leaf first)")
    add_file(parser, "--client-key", metavar="PEM", help="its private key")
    parser.add_argument("--connections", type=positive, default=1, metavar="N",
                        help="open N connections and compare the chains they are served")
    parser.add_argument("--connect", metavar="ADDRESS[:PORT]",
                        help="connect here instead of the URL's host (one node behind a "
                             "balancer); SNI, Host and the name check still use the URL")
    posting = parser.add_mutually_exclusive_group()
    posting.add_argument("--post", action="store_true",
                         help="also POST one test notification (an Account named 'omgate test "
                              "1'), which the server stores and delivers like any other")
    posting.add_argument("--no-post", action="store_true",
                         help=argparse.SUPPRESS)  # the default now; accepted for old scripts
    parser.add_argument("--json", action="store_true", help="the report as JSON")


def _run(args: argparse.Namespace) -> int:
    from service.tools.probe import run_probe

    if args.client_key and not args.client_cert:
        print("omgate probe: --client-key needs --client-cert", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_probe(args.url, sys.stdout, as_json=args.json, ca=args.ca,
                         client_cert=args.client_cert, client_key=args.client_key,
                         connections=args.connections, post=args.post,
                         connect=args.connect)
    except ValueError as error:
        print(f"omgate probe: {error}", file=sys.stderr)
        return EXIT_USAGE


COMMAND = Command(
    "probe", "connect to a deployed endpoint as Salesforce would", _arguments, _run,
    description="Connect with TLS 1.2+ and SNI, show the chain the server sends and every "
                "finding, and what the server asked for in the client-certificate exchange "
                "(and what a Java client would do). When it asked for one, the server's "
                "verdict on the certificate presented (or on none), from one request that "
                "no receiver stores; no notification is posted unless --post. Exit status "
                "1 when anything is wrong, a refused --client-cert included.",
    epilog="Example: omgate probe https://omgate.example.com/salesforce/outbound "
           "--connections 6",
)
