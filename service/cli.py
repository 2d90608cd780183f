"""The ``omgate`` command line. Exit status: 0 fine, 1 problems found, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from service.config import Config, ConfigError, load_config
from service.inbox import InboxError
from service.logs import configure_logging

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

CONFIG_HELP = "configuration file (default: $OMGATE_CONFIG, else config/omgate.toml)"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH", help=CONFIG_HELP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omgate",
        description="A receiving endpoint for Salesforce Outbound Messaging.",
        epilog="Start with `omgate pki dev` then `omgate serve`; see README.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="receive, store and acknowledge outbound messages",
        description="Serve the configured endpoints until SIGTERM or Ctrl-C. Every key of the "
                    "configuration can be overridden by OMGATE_<SECTION>__<KEY>, "
                    "e.g. OMGATE_SERVER__BIND='[\"0.0.0.0:8443\"]'.",
    )
    _add_config(serve)

    inbox = commands.add_parser(
        "inbox", help="read stored notifications as JSON",
        description="Print stored notifications as JSON: organization, action, notification "
                    "Id, sObject type, record Id, fields and received time.",
    )
    inbox_commands = inbox.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")
    listing = inbox_commands.add_parser("list", help="a JSON array of stored notifications")
    _add_config(listing)
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--after", type=int, default=0, metavar="ID",
                         help="only notifications with an inbox id above ID (for paging)")
    show = inbox_commands.add_parser("show", help="one notification by its inbox id")
    show.add_argument("id", type=int, metavar="ID", help='the inbox id ("id" in `inbox list`)')
    _add_config(show)
    export = inbox_commands.add_parser("export", help="every notification, as JSON Lines")
    _add_config(export)

    inspect = commands.add_parser(
        "inspect", help="analyse a client certificate chain file against the policy",
        description="Analyse the certificates in PEMFILE, in file order, as if a client had "
                    "presented them: every finding with its fix, against the configuration's "
                    "[client_auth] rules. Exit status 1 when the chain would be refused.",
        epilog="Example: omgate inspect salesforce-chain.pem --trust digicert-root.pem",
    )
    inspect.add_argument("pemfile", type=Path, metavar="PEMFILE",
                         help="the chain, leaf first, as the client would send it")
    _add_config(inspect)
    inspect.add_argument("--trust", type=Path, metavar="PEM",
                         help="trust anchors to use instead of client_auth.trust")
    inspect.add_argument("--endpoint", metavar="PATH",
                         help="use this endpoint's [endpoints.client_auth] rules")
    inspect.add_argument("--json", action="store_true", help="findings as JSON")

    pki = commands.add_parser("pki", help="certificates for development")
    pki_commands = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    dev = pki_commands.add_parser(
        "dev", help="a development server certificate and a Salesforce-like client chain",
        description="Create a development CA and a server certificate for localhost, and a "
                    "client chain (root, intermediate, leaf) shaped like Salesforce's.",
    )
    dev.add_argument("--out", type=Path, default=Path("certs/dev"), metavar="DIR",
                     help="folder to write into (default certs/dev)")
    dev.add_argument("--force", action="store_true", help="replace existing files")
    return parser


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _serve(args: argparse.Namespace) -> int:
    from service.server import serve

    config = _load(args)
    configure_logging(config.logging.format, config.logging.level)
    try:
        asyncio.run(serve(config))
    except OSError as error:
        print(f"omgate serve: cannot listen: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _inbox(args: argparse.Namespace) -> int:
    from service.tools import inbox

    config = _load(args)
    configure_logging("console", "warning")
    match args.inbox_command:
        case "list":
            return asyncio.run(inbox.list_notifications(config, sys.stdout, limit=args.limit,
                                                        after_id=args.after))
        case "show":
            return asyncio.run(inbox.show_notification(config, sys.stdout, sys.stderr, args.id))
        case _:
            return asyncio.run(inbox.export_notifications(config, sys.stdout))


def _inspect(args: argparse.Namespace) -> int:
    from service.tools.inspect import inspect_chain

    return inspect_chain(args.pemfile, _load(args), sys.stdout, endpoint=args.endpoint,
                         trust=args.trust, as_json=args.json)


def _pki(args: argparse.Namespace) -> int:
    from service.tools.pki import PkiError, write_dev_pki

    try:
        written = write_dev_pki(args.out, force=args.force)
    except PkiError as error:
        print(f"omgate pki dev: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    for path in written:
        print(f"wrote {path}")
    print(f"\nTrust the server in clients with: curl --cacert {args.out / 'ca.pem'} ...")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _serve,
    "inbox": _inbox,
    "inspect": _inspect,
    "pki": _pki,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"omgate: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InboxError as error:
        print(f"omgate: inbox error: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
