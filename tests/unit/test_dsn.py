"""The one masker of connection strings: what libpq reads as a password is never shown."""

from __future__ import annotations

import secrets

import pytest

from service.dsn import MASK, mask_dsn

PASSWORD = f"Wh1sper-{secrets.token_hex(6)}"  # random: a leak of it is unmistakable


@pytest.mark.parametrize("dsn", [
    f"postgresql://omgate:{PASSWORD}@db.example.com/omgate",
    f"postgres://omgate@db.example.com:5433/omgate?sslmode=require&password={PASSWORD}",
    f"host=db.example.com password={PASSWORD} dbname=omgate",
    f"host=db.example.com password='{PASSWORD}' dbname=omgate",  # quoted
    f"postgresql://omgate:{PASSWORD.replace('-', '%2D')}@db.example.com/omgate",
    f"postgresql://omgate@db.example.com/omgate?sslpassword={PASSWORD}",
])
def test_each_form_of_connection_string_is_shown_without_its_password(dsn):
    masked = mask_dsn(dsn)
    assert PASSWORD not in masked.shown
    assert PASSWORD not in repr(masked)
    assert f"password={MASK}" in masked.shown
    assert "db.example.com" in masked.shown
    assert masked.readable
    error_text = f"connection to {dsn} failed: password {PASSWORD} refused"
    assert PASSWORD not in masked.scrub(error_text)
    assert dsn not in masked.scrub(error_text)


@pytest.mark.parametrize("dsn", [
    f"postgresq://omgate:{PASSWORD}@db.example.com/omgate",  # not a scheme libpq knows
    f"postgresql://omgate:{PASSWORD}@db.example.com/omgate?sslmod=require",
    f"host=db.example.com password={PASSWORD} with spaces",
])
def test_a_connection_string_libpq_cannot_read_is_not_shown(dsn):
    masked = mask_dsn(dsn)
    assert not masked.readable
    assert PASSWORD not in masked.shown
    assert PASSWORD not in masked.scrub(f"cannot use {dsn}")


def test_urls_without_a_password_are_shown_as_they_are():
    assert mask_dsn("sqlite:////var/lib/omgate/inbox.db").shown == (
        "sqlite:////var/lib/omgate/inbox.db")
    assert mask_dsn("sqlite://inbox.db").shown == "sqlite://inbox.db"  # a typo, kept visible
    assert "host=db.example.com" in mask_dsn("postgresql://omgate@db.example.com/x").shown


@pytest.mark.parametrize(("url", "shown"), [
    (f"https://omgate:{PASSWORD}@hooks.example.com/in?x=1",
     f"https://omgate:{MASK}@hooks.example.com/in?x=1"),
    (f"http://{PASSWORD}@hooks.example.com:8080/in",  # a token as the user name
     f"http://{MASK}@hooks.example.com:8080/in"),
    (f"https://omgate:{PASSWORD}@[::1/in", None),  # urllib cannot read it: not shown
    ("https://hooks.example.com/in", "https://hooks.example.com/in"),
])
def test_a_webhook_url_is_shown_without_its_credentials(url, shown):
    masked = mask_dsn(url)
    assert PASSWORD not in masked.shown and PASSWORD not in repr(masked)
    assert PASSWORD not in masked.scrub(f"POST {url} failed")
    if shown is not None:
        assert masked.shown == shown


@pytest.mark.parametrize("keyword", ["oauth_client_secret", "scram_client_key",
                                     "scram_server_key"])
def test_every_secret_libpq_reads_is_masked(keyword):
    """libpq 18 reads secrets besides the password: each logs in, or stands in for it."""
    masked = mask_dsn(f"postgresql://omgate@db.example.com/omgate?{keyword}=Wh1sper0c0ffee")
    assert masked.readable and "Wh1sper0c0ffee" not in masked.shown
    assert "Wh1sper0c0ffee" not in masked.scrub("connection failed: Wh1sper0c0ffee")


@pytest.mark.parametrize("password", ["ab/Wh1sper", "ab?Wh1sper", "ab#Wh1sper", "12/Wh1sper"])
def test_a_webhook_password_with_an_unencoded_delimiter_is_never_shown(password):
    """URL parsers end the host at the first "/", "?" or "#": a generated password holding
    one put the rest of it, and the "@", in the path, where nothing masked it."""
    masked = mask_dsn(f"https://omgate:{password}@hooks.example.com/in")
    assert "Wh1sper" not in masked.shown and not masked.readable
    assert "Wh1sper" not in masked.scrub(f"failed: https://omgate:{password}@hooks.example.com/in")
