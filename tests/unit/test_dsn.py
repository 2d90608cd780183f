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
