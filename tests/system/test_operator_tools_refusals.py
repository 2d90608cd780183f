"""The operator tools say what went wrong and never pass what serve refuses: check against
serve's start-up refusals, numbers SQLite cannot hold, a mistyped inbox path, a retry left
to a running attempt, a report that cannot be written, init into a file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from harness import PAYLOADS, run_omgate, to_toml

from service.clientauth import ClientIdentity
from service.inbox import IncomingMessage, open_inbox
from service.inbox.chains import ChainSighting
from service.soap import parse_message
from service.tools.pki import issue, name

NOW = dt.datetime.now(dt.UTC)


def _config(folder: Path, dev_pki: Path, *, server: dict | None = None,
            inbox_url: str | None = None, extra: dict | None = None) -> Path:
    path = folder / "omgate.toml"
    path.write_text(to_toml({
        "server": {"bind": ["127.0.0.1:0"], "certfile": str(dev_pki / "server.pem"),
                   "keyfile": str(dev_pki / "server.key"), **(server or {})},
        "inbox": {"url": inbox_url or f"sqlite:///{folder / 'inbox.db'}"},
        **(extra or {}),
    }))
    return path


# -- 1. check passes what serve refuses --------------------------------------------------

def _refused_by_serve(tmp_path: Path, dev_pki: Path, case: str) -> Path:
    if case == "missing_inbox_folder":
        return _config(tmp_path, dev_pki,
                       inbox_url=f"sqlite:///{tmp_path / 'omgtae' / 'inbox.db'}")
    if case == "console_on_all_addresses_without_token":
        return _config(tmp_path, dev_pki, server={"admin_bind": "0.0.0.0:0"})
    if case == "max_body_bytes_no_budget_can_hold":
        return _config(tmp_path, dev_pki, server={"max_body_bytes": 900_000_000})
    if case == "unreadable_wsdl":
        (tmp_path / "broken.wsdl").write_text("<definitions>not closed")
        return _config(tmp_path, dev_pki, extra={"endpoints": [
            {"path": "/salesforce/outbound", "wsdl": str(tmp_path / "broken.wsdl")}]})
    assert case == "nothing_listens"
    path = tmp_path / "omgate.toml"
    path.write_text(to_toml({"server": {"bind": []},
                             "inbox": {"url": f"sqlite:///{tmp_path / 'inbox.db'}"}}))
    return path


@pytest.mark.parametrize("case", [
    "missing_inbox_folder", "console_on_all_addresses_without_token",
    "max_body_bytes_no_budget_can_hold", "unreadable_wsdl", "nothing_listens"])
def test_check_does_not_pass_a_configuration_serve_refuses(tmp_path, dev_pki, case):
    """`omgate check` ("before a deploy": "Validates the configuration and everything it
    points to") says OK and exits 0 for configurations `omgate serve` refuses at start with
    exit status 2: the deploy gate passes a deploy that cannot start."""
    config = _refused_by_serve(tmp_path, dev_pki, case)
    served = run_omgate("serve", "--config", str(config), timeout=30)
    assert served.returncode == 2, served.stderr  # serve refuses it, before it listens
    checked = run_omgate("check", "--config", str(config), "--json",
                         "--trust", str(dev_pki / "ca.pem"))
    assert checked.returncode != 0, (
        f"check passed ({checked.stdout.strip()[-60:]!r}) what serve refused: "
        f"{served.stderr.strip().splitlines()[-1]}")


# -- 2. tracebacks on out-of-range numbers ----------------------------------------------

@pytest.mark.parametrize("arguments", [
    ("show", "99999999999999999999"),
    ("retry", "99999999999999999999"),
    ("list", "--after", "99999999999999999999"),
    ("list", "--limit", "9223372036854775807"),
    ("list", "--since", "1000000d"),
])
def test_inbox_tools_answer_out_of_range_numbers_without_a_traceback(tmp_path, dev_pki,
                                                                     arguments):
    """An id, a limit or an age past what SQLite or datetime can hold (a pasted value, a
    typo) ends `omgate inbox` with a Python traceback instead of a usage error."""
    config = _config(tmp_path, dev_pki)
    result = run_omgate("inbox", *arguments, "--config", str(config))
    assert "Traceback" not in result.stderr, result.stderr[-400:]
    assert result.returncode in (1, 2)


# -- 3. a read creates the inbox it was asked to read -----------------------------------

@pytest.mark.parametrize("action", ["list", "export"])
def test_reading_an_inbox_that_does_not_exist_is_an_error_not_a_new_empty_inbox(
        tmp_path, dev_pki, action):
    """A mistyped file name in [inbox] url (the folder exists): `omgate inbox list` prints
    [] and `export` nothing, both exit 0, and each creates an empty inbox at the typo. The
    README refuses a mistyped folder for this reason ("acknowledge messages into an inbox
    nobody reads"); a mistyped file name reads as "no notifications"."""
    (tmp_path / "var").mkdir()
    database = tmp_path / "var" / "inbx.db"  # the real one is inbox.db
    config = _config(tmp_path, dev_pki, inbox_url=f"sqlite:///{database}")
    result = run_omgate("inbox", action, "--config", str(config))
    assert not database.exists(), "a read-only tool created an inbox"
    assert result.returncode != 0, result.stdout


# -- 4. retry of a notification being delivered says it does not exist ------------------

def test_retry_of_a_notification_under_lease_does_not_say_it_does_not_exist(tmp_path,
                                                                            dev_pki):
    """`omgate inbox retry ID` leaves a notification a worker is delivering to that attempt
    (as the README says), but tells the operator "no notification with inbox id ID": the
    notification exists, and `inbox show ID` prints it."""
    config = _config(tmp_path, dev_pki)
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    message = parse_message((PAYLOADS / "amplabs-create_account.xml").read_bytes())

    async def store_and_lease() -> int:
        inbox = await open_inbox(url, group_commit=False)
        try:
            now = dt.datetime.now(dt.UTC)  # the lease must still run when retry is asked
            await inbox.store(IncomingMessage(message, "/salesforce/outbound", now))
            [claimed] = await inbox.claim(limit=10, lease_seconds=600, now=now)
            return claimed.id
        finally:
            await inbox.close()

    inbox_id = asyncio.run(store_and_lease())
    shown = run_omgate("inbox", "show", str(inbox_id), "--config", str(config))
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == inbox_id
    retried = run_omgate("inbox", "retry", str(inbox_id), "--config", str(config))
    assert retried.returncode != 0  # left to the running attempt: fine
    assert f"no notification with inbox id {inbox_id}" not in retried.stderr, retried.stderr


# -- 5. chains show --html to a path it cannot write ------------------------------------

def test_chains_show_html_to_a_path_it_cannot_write_is_an_error_not_a_traceback(tmp_path,
                                                                             dev_pki):
    """`omgate chains show PREFIX --html FILE` with FILE in a folder that does not exist
    (or FILE a folder) ends with a traceback (FileNotFoundError, IsADirectoryError)."""
    config = _config(tmp_path, dev_pki)
    leaf = issue(name("client.example"))
    identity = ClientIdentity((leaf.certificate,), "tls", "127.0.0.1")
    sighting = ChainSighting(identity.chain_sha256,
                             (leaf.certificate.public_bytes(Encoding.DER),), "tls", NOW, NOW,
                             1, 0, 0, "127.0.0.1", None, ())

    async def record() -> None:
        inbox = await open_inbox(f"sqlite:///{tmp_path / 'inbox.db'}", group_commit=False)
        try:
            await inbox.record_chains([sighting], [])
        finally:
            await inbox.close()

    asyncio.run(record())
    prefix = identity.chain_sha256[:12]
    assert run_omgate("chains", "show", prefix, "--config", str(config)).returncode == 0
    for target in (tmp_path / "no-such-folder" / "report.html", tmp_path):
        result = run_omgate("chains", "show", prefix, "--html", str(target),
                            "--config", str(config))
        assert "Traceback" not in result.stderr, result.stderr[-300:]
        assert result.returncode != 0


# -- 6. init into a file ----------------------------------------------------------------

def test_init_into_a_path_that_is_a_file_does_not_say_the_configuration_exists(tmp_path):
    """`omgate init DIR` where DIR is a regular file answers "DIR/omgate.toml exists; it was
    left as it is": no such file exists (DIR is not a folder)."""
    target = tmp_path / "etc-omgate"
    target.write_text("a file, not a folder\n")
    result = run_omgate("init", str(target))
    assert result.returncode == 1
    assert "exists; it was left as it is" not in result.stderr, result.stderr
