"""What tests/unit/test_hostile.py and tests/system/test_hostile_system.py share."""

from __future__ import annotations

from harness import PAYLOADS
from hypothesis import strategies as st

VALID = (PAYLOADS / "aspnet-contacts-2.xml").read_bytes()


def mutations() -> st.SearchStrategy[bytes]:
    """A real message cut, spliced and sprinkled with XML-special bytes."""
    special = st.sampled_from([b"<", b">", b"&", b"<!DOCTYPE x>", b"]]>", b"\x00", b"\xff",
                               b"xsi:nil=\"true\"", b"<Notification>", b"</sObject>", b"\"",
                               b"&amp;", b"&#0;", b"<?xml version='1.0'?>"])
    return st.builds(
        lambda cut, insert, at: VALID[:at] + insert + VALID[at + cut:],
        st.integers(0, 40), special, st.integers(0, len(VALID)))
