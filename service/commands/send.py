"""``omgate send``: outbound messages sent as Salesforce sends them (smoke tests, load)."""

from __future__ import annotations

import argparse
import sys

from service.commands.arguments import add_file, positive
from service.commands.command import Command
from service.exitcodes import EXIT_USAGE

MAX_NOTIFICATIONS = 100  # in one message: Salesforce's limit


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL")
    source = parser.add_mutually_exclusive_group(required=True)
    add_file(source, "--payload", metavar="FILE", help="a SOAP message file")
    source.add_argument("--generate", metavar="TYPE",
                        help="generate messages about this sObject type (say, Account)")
    parser.add_argument("--count", type=positive, default=1, metavar="N",
                        help="messages to send (1)")
    parser.add_argument("--notifications", type=positive, default=1, metavar="K",
                        help="notifications per generated message (1, at most 100)")
    parser.add_argument("--concurrency", type=positive, default=1, metavar="C",
                        help="connections sending at once (1)")
    add_file(parser, "--ca", metavar="PEM", help="roots that sign the server")
    add_file(parser, "--client-cert", metavar="PEM",
             help="client certificate chain to present (leaf first)")
    add_file(parser, "--client-key", metavar="PEM", help="its private key")


def _run(args: argparse.Namespace) -> int:
    from service.tools.send import run_send

    if args.notifications > MAX_NOTIFICATIONS:
        print("omgate send: --notifications is at most 100 (Salesforce's limit)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_send(args.url, sys.stdout, payload=args.payload, generate=args.generate,
                        count=args.count, notifications=args.notifications,
                        concurrency=args.concurrency, ca=args.ca,
                        client_cert=args.client_cert, client_key=args.client_key)
    except (ValueError, OSError) as error:
        print(f"omgate send: {error}", file=sys.stderr)
        return EXIT_USAGE


COMMAND = Command(
    "send", "send outbound messages like Salesforce (smoke tests, load)", _arguments, _run,
    description="POST a payload file, or generated messages, and print the ack, fault or "
                "transport error of each. Exit status 1 when any was not acknowledged.",
    epilog="Example: omgate send https://localhost:8443/salesforce/outbound --generate "
           "Account --count 100 --client-cert certs/dev/client-chain.pem --client-key "
           "certs/dev/client.key --ca certs/dev/ca.pem",
)
