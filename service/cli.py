"""The ``omgate`` command line. Exit status: 0 fine, 1 problems found, 2 usage or config error
(or, for ``serve``, an address it cannot listen on), 130 after Ctrl-C, 141 when the reader
of the output went away (``omgate inbox export | head``)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.build import build_info
from service.config import CONFIG_SEARCH_PATHS, Config, ConfigError, load_config
from service.exitcodes import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    UsageError,
)
from service.inbox import STATES, InboxError
from service.logs import configure_logging
from service.supervisor import ListenError, serve_processes

CONFIG_HELP = ("configuration file (default: $OMGATE_CONFIG, else the first of "
               f"{', '.join(str(path) for path in CONFIG_SEARCH_PATHS)})")
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
COMPLETION_SHELLS = ("bash", "zsh")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH", help=CONFIG_HELP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omgate",
        description="A receiving endpoint for Salesforce Outbound Messaging.",
        epilog="Start with `omgate init`, `omgate pki dev`, then `omgate serve`. The manual "
               "is installed with omgate: `omgate help` lists its topics, `omgate help TOPIC` "
               "shows one (e.g. `omgate help probe`).",
    )
    parser.add_argument("--version", action="version", version=build_info().line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init", help="write a commented configuration to start from",
        description="Write DIR/omgate.toml: every key with its comment, set up for the "
                    "development certificates of `omgate pki dev`. An existing file is never "
                    "overwritten.",
        epilog="Example: omgate init /etc/omgate",
    )
    init.add_argument("dir", nargs="?", type=Path, default=CONFIG_SEARCH_PATHS[0].parent,
                      metavar="DIR",
                      help=f"folder to write omgate.toml into (default {CONFIG_SEARCH_PATHS[0]}"
                           ", where omgate looks first)")

    serve = commands.add_parser(
        "serve", help="receive, store and acknowledge outbound messages",
        description="Serve the configured endpoints until SIGTERM or Ctrl-C. Every key of the "
                    "configuration can be overridden by OMGATE_<SECTION>__<KEY>, "
                    "e.g. OMGATE_SERVER__BIND='[\"0.0.0.0:8443\"]'.",
    )
    _add_config(serve)
    serve.add_argument("--create-inbox-dir", action="store_true",
                       help="create the folder of a SQLite inbox.url when it does not exist "
                            "(without it, a missing folder stops the start: it may be a typo)")

    inbox = commands.add_parser(
        "inbox", help="read stored notifications as JSON",
        description="Print stored notifications as JSON: organization, action, notification "
                    "Id, sObject type, record Id, fields and received time.",
    )
    inbox_commands = inbox.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")
    listing = inbox_commands.add_parser(
        "list", help="a JSON array of stored notifications",
        description="A JSON array of stored notifications, oldest first. When more match than "
                    "--limit, standard error says so and how to list the next ones.")
    _add_config(listing)
    listing.add_argument("--limit", type=_positive, default=100, metavar="N",
                         help="at most this many (100)")
    listing.add_argument("--since", type=_since, metavar="TIME",
                         help="only notifications received since TIME: an ISO 8601 time, or "
                              "an age such as 30m, 12h or 7d")
    listing.add_argument("--after", type=int, default=0, metavar="ID",
                         help="only notifications with an inbox id above ID (for paging)")
    listing.add_argument("--state", choices=STATES,
                         help="only notifications in this delivery state")
    listing.add_argument("--conflicts", action="store_true",
                         help="only notifications redelivered with other content (see "
                              "`inbox show ID` for what each redelivery said)")
    show = inbox_commands.add_parser(
        "show", help="one notification by its inbox id (and any conflicting redeliveries)")
    show.add_argument("id", type=int, metavar="ID", help='the inbox id ("id" in `inbox list`)')
    _add_config(show)
    export = inbox_commands.add_parser("export", help="every notification, as JSON Lines")
    _add_config(export)
    retry = inbox_commands.add_parser(
        "retry", help="deliver a notification again (or every dead letter)",
        description="Make a notification pending delivery again, at once: one by its inbox id, "
                    "or with --dead every notification given up on.")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", metavar="ID", help="an inbox id")
    which.add_argument("--dead", action="store_true", help="every dead letter")
    _add_config(retry)
    migrate = inbox_commands.add_parser(
        "migrate", help="create or upgrade the inbox schema (omgate serve does it at start)")
    _add_config(migrate)

    deliver = commands.add_parser(
        "deliver", help="run the delivery worker alone (no listeners)",
        description="Hand stored notifications to [delivery] webhook_url or handler until "
                    "SIGTERM, as omgate serve does; for running delivery separately.")
    _add_config(deliver)

    inspect = commands.add_parser(
        "inspect", help="analyse a client certificate chain file against the policy",
        description="Analyse the certificates in PEMFILE, in file order, as if a client had "
                    "presented them: every finding with its fix, against the configuration's "
                    "[client_auth] rules. Exit status 1 when the chain would be refused.",
        epilog="Example: omgate inspect salesforce-chain.pem --trust digicert-root.pem",
    )
    inspect.add_argument("pemfile", type=Path, metavar="PEMFILE",
                         help="the chain, leaf first, as the client would send it: PEM, DER "
                              "or PKCS#7 (.p7b, .p7c)")
    _add_config(inspect)
    inspect.add_argument("--trust", type=Path, metavar="PEM",
                         help="trust anchors to use instead of client_auth.trust")
    inspect.add_argument("--endpoint", metavar="PATH",
                         help="use this endpoint's [endpoints.client_auth] rules")
    inspect.add_argument("--json", action="store_true", help="findings as JSON")

    check = commands.add_parser(
        "check", help="validate the configuration and everything it points to",
        description="Check the server certificate chain the way Salesforce will see it "
                    "(order, intermediates, expiry, key, server.public_names, a public root) "
                    "and the client-certificate settings (files, pins, DNs, combinations). "
                    "Exit status 0 clean, 1 errors found, 2 unusable configuration.",
        epilog="Example: omgate check --config /etc/omgate/omgate.toml",
    )
    _add_config(check)
    check.add_argument("--trust", type=Path, metavar="PEM",
                       help="roots to check the server chain against (default: the public "
                            "roots of certifi, Mozilla's list)")
    check.add_argument("--at", type=_moment, metavar="TIME",
                       help="check as of this ISO 8601 time (say, the day of a deploy)")
    check.add_argument("--json", action="store_true", help="findings as JSON")

    probe = commands.add_parser(
        "probe", help="connect to a deployed endpoint as Salesforce would",
        description="Connect with TLS 1.2+ and SNI, show the chain the server sends and every "
                    "finding, and what the server asked for in the client-certificate exchange "
                    "(and what a Java client would do). When it asked for one, the server's "
                    "verdict on the certificate presented (or on none), from one request that "
                    "no receiver stores; no notification is posted unless --post. Exit status "
                    "1 when anything is wrong, a refused --client-cert included.",
        epilog="Example: omgate probe https://omgate.example.com/salesforce/outbound "
               "--connections 6",
    )
    probe.add_argument("url", metavar="URL")
    probe.add_argument("--ca", type=Path, metavar="PEM",
                       help="roots to trust instead of the public ones")
    probe.add_argument("--client-cert", type=Path, metavar="PEM",
                       help="present this certificate chain (leaf first)")
    probe.add_argument("--client-key", type=Path, metavar="PEM", help="its private key")
    probe.add_argument("--connections", type=_positive, default=1, metavar="N",
                       help="open N connections and compare the chains they are served")
    probe.add_argument("--connect", metavar="ADDRESS[:PORT]",
                       help="connect here instead of the URL's host (one node behind a "
                            "balancer); SNI, Host and the name check still use the URL")
    posting = probe.add_mutually_exclusive_group()
    posting.add_argument("--post", action="store_true",
                         help="also POST one test notification (an Account named 'omgate test "
                              "1'), which the server stores and delivers like any other")
    posting.add_argument("--no-post", action="store_true",
                         help=argparse.SUPPRESS)  # the default now; accepted for old scripts
    probe.add_argument("--json", action="store_true", help="the report as JSON")

    send = commands.add_parser(
        "send", help="send outbound messages like Salesforce (smoke tests, load)",
        description="POST a payload file, or generated messages, and print the ack, fault or "
                    "transport error of each. Exit status 1 when any was not acknowledged.",
        epilog="Example: omgate send https://localhost:8443/salesforce/outbound --generate "
               "Account --count 100 --client-cert certs/dev/client-chain.pem --client-key "
               "certs/dev/client.key --ca certs/dev/ca.pem",
    )
    send.add_argument("url", metavar="URL")
    source = send.add_mutually_exclusive_group(required=True)
    source.add_argument("--payload", type=Path, metavar="FILE", help="a SOAP message file")
    source.add_argument("--generate", metavar="TYPE",
                        help="generate messages about this sObject type (say, Account)")
    send.add_argument("--count", type=_positive, default=1, metavar="N",
                      help="messages to send (1)")
    send.add_argument("--notifications", type=_positive, default=1, metavar="K",
                      help="notifications per generated message (1, at most 100)")
    send.add_argument("--concurrency", type=_positive, default=1, metavar="C",
                      help="connections sending at once (1)")
    send.add_argument("--ca", type=Path, metavar="PEM", help="roots that sign the server")
    send.add_argument("--client-cert", type=Path, metavar="PEM",
                      help="client certificate chain to present (leaf first)")
    send.add_argument("--client-key", type=Path, metavar="PEM", help="its private key")

    _add_chains(commands)

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

    manual = commands.add_parser(
        "help", help="the manual: its topics, or one of them",
        description="Show a section of omgate's manual (its README, installed with it): "
                    "without TOPIC, the list of topics.",
        epilog="Example: omgate help probe")
    manual.add_argument("topic", nargs="*", metavar="TOPIC",
                        help="a word or two of a section's title")

    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description="Print the completion script of omgate's commands and options for SHELL.",
        epilog="bash: source <(omgate completion bash), or save it in "
               "~/.local/share/bash-completion/completions/omgate. zsh: save it as _omgate in "
               "a folder of $fpath.",
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS, metavar="SHELL",
                            help=" or ".join(COMPLETION_SHELLS))
    return parser


def _add_chains(commands: Any) -> None:
    from service.inbox.chains import CHAIN_OUTCOMES
    from service.observatory.views import parse_duration

    def duration(text: str) -> dt.timedelta:
        try:
            return parse_duration(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    chains = commands.add_parser(
        "chains", help="the client chains seen: list, show, simulate a policy, pin",
        description="Every client chain omgate has seen (TLS or forwarded), with its counts "
                    "and last decisions, from the inbox database.")
    actions = chains.add_subparsers(dest="chains_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the chains seen in a window")
    listing.add_argument("--since", type=duration, default=dt.timedelta(days=7),
                         metavar="AGE", help="seen within this long (7d; also 12h, 30m)")
    listing.add_argument("--outcome", choices=CHAIN_OUTCOMES,
                         help="only chains whose last decision had this outcome")
    listing.add_argument("--endpoint", metavar="PATH", help="only chains seen on this endpoint")
    listing.add_argument("--json", action="store_true", help="a JSON array")
    _add_config(listing)
    show = actions.add_parser("show", help="one chain: what inspect says, where and when seen")
    show.add_argument("prefix", metavar="SHA256-PREFIX",
                      help="the start of its fingerprint (at least 4 hex digits), or none")
    show.add_argument("--pem", action="store_true", help="write the chain as PEM, as presented")
    show.add_argument("--json", action="store_true", help="everything as JSON")
    show.add_argument("--html", type=Path, metavar="FILE",
                      help="also write a self-contained HTML report with its picture")
    _add_config(show)
    simulate = actions.add_parser(
        "simulate", help="decide every recorded chain under a candidate configuration",
        description="Decide every chain seen in the window under the --config file's policy "
                    "and say what would have been accepted and refused. Exit status 1 when "
                    "any chain seen would have been refused: a deploy gate.")
    simulate.add_argument("--since", type=duration, default=dt.timedelta(days=30),
                          metavar="AGE", help="chains seen within this long (30d)")
    simulate.add_argument("--mode", choices=("request", "optional", "require"),
                          help="decide in this mode instead of the configuration's")
    _add_config(simulate)
    pin = actions.add_parser("pin", help="configuration lines that admit exactly one chain")
    pin.add_argument("prefix", metavar="SHA256-PREFIX", help="the start of its fingerprint")
    _add_config(pin)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _since(text: str) -> dt.datetime:
    """``7d``, ``12h``, ``30m``, ``45s`` ago, or an ISO 8601 time."""
    age = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if age is None:
        return _moment(text)
    seconds = int(age.group(1)) * AGE_UNITS[age.group(2)]
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _init(args: argparse.Namespace) -> int:
    from service.tools.init import InitError, make_inbox_folder, write_config, write_next_steps

    try:
        path = write_config(args.dir)
        inbox_folder = make_inbox_folder(path)
    except InitError as error:
        print(f"omgate init: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    write_next_steps(path, sys.stdout, os.environ, inbox_folder)
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from service.tools.check import refuse_conflicts, warn_readable_secrets

    config = _load(args)
    configure_logging(config.logging.format, config.logging.level)
    if refuse_conflicts(config, sys.stderr):
        return EXIT_USAGE
    warn_readable_secrets(config)
    return serve_processes(config, create_inbox_folder=args.create_inbox_dir)


def _inbox(args: argparse.Namespace) -> int:
    from service.tools import inbox

    config = _load(args)
    configure_logging("console", "warning")
    match args.inbox_command:
        case "list":
            which = inbox.ListFilter(limit=args.limit, after_id=args.after, state=args.state,
                                     conflicted=args.conflicts, since=args.since)
            return asyncio.run(inbox.list_notifications(config, sys.stdout, sys.stderr, which))
        case "show":
            return asyncio.run(inbox.show_notification(config, sys.stdout, sys.stderr, args.id))
        case "retry":
            return asyncio.run(inbox.retry_notifications(config, sys.stdout, sys.stderr,
                                                         None if args.dead else args.id))
        case "migrate":
            return asyncio.run(inbox.migrate(config, sys.stdout))
        case _:
            return asyncio.run(inbox.export_notifications(config, sys.stdout))


def _deliver(args: argparse.Namespace) -> int:
    from service.tools.deliver import run_delivery

    config = _load(args)
    configure_logging(config.logging.format, config.logging.level)
    return asyncio.run(run_delivery(config))


def _inspect(args: argparse.Namespace) -> int:
    from service.tools.inspect import inspect_chain

    return inspect_chain(args.pemfile, _load(args), sys.stdout, endpoint=args.endpoint,
                         trust=args.trust, as_json=args.json)


def _check(args: argparse.Namespace) -> int:
    from service.tools.check import run_check

    return run_check(_load(args), sys.stdout, trust=args.trust, as_json=args.json, now=args.at)


def _probe(args: argparse.Namespace) -> int:
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


def _send(args: argparse.Namespace) -> int:
    from service.tools.send import run_send

    if args.notifications > 100:
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


def _chains(args: argparse.Namespace) -> int:
    from service.tools import chains

    config = _load(args)
    configure_logging("console", "warning")
    match args.chains_command:
        case "list":
            return chains.list_chains(config, sys.stdout, since=args.since,
                                      outcome=args.outcome, endpoint=args.endpoint,
                                      as_json=args.json)
        case "show":
            return chains.show_chain(config, sys.stdout, sys.stderr, args.prefix, pem=args.pem,
                                     as_json=args.json, html=args.html)
        case "simulate":
            return chains.simulate_chains(config, sys.stdout, since=args.since,
                                          mode=args.mode)
        case _:
            return chains.pin_chain(config, sys.stdout, sys.stderr, args.prefix)


def _pki(args: argparse.Namespace) -> int:
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


def _complete_files(parser: argparse.ArgumentParser, completion: object) -> None:
    """Arguments that name files complete as file names, in every subcommand."""
    for action in parser._actions:
        if action.type is Path:  # shtab reads .complete, an attribute argparse does not declare
            action.complete = completion  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _complete_files(subparser, completion)


def _help(args: argparse.Namespace) -> int:
    from service.tools.manual import run_help

    return run_help(" ".join(args.topic) or None, sys.stdout, sys.stderr)


def _completion(args: argparse.Namespace) -> int:
    import shtab

    parser = _parser()
    _complete_files(parser, shtab.FILE)
    print(shtab.complete(parser, shell=args.shell))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": _init,
    "serve": _serve,
    "chains": _chains,
    "check": _check,
    "completion": _completion,
    "deliver": _deliver,
    "help": _help,
    "inbox": _inbox,
    "inspect": _inspect,
    "pki": _pki,
    "probe": _probe,
    "send": _send,
}


def _quiet_stdout() -> None:
    """After the reader of standard output went away: point it at /dev/null, so that the
    interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConfigError as error:
        print(f"omgate: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as error:
        print(f"omgate {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ListenError as error:
        print(f"omgate {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InboxError as error:
        print(f"omgate: inbox error: {error}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
