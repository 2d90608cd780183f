"""Runs last: no log line of any server the suite started holds the SessionId."""

from __future__ import annotations

from harness import CONTACTS_SESSION_ID, PAYLOADS, is_ack


def test_session_id_of_a_real_payload_never_reaches_the_logs(omgate_server, server_log_dir):
    body = (PAYLOADS / "aspnet-contacts-2.xml").read_bytes()
    assert CONTACTS_SESSION_ID.encode() in body
    server = omgate_server({"inbox": {"store_session_id": True}})
    assert is_ack(server.post(body))
    assert is_ack(server.post(body))  # duplicate path
    assert server.post(body.replace(b"</notifications>", b"<Notification>")).status_code == 400
    assert server.post(body, headers={"Content-Type": "text/plain"}).status_code == 415
    server.stop()
    logs = sorted(server_log_dir.glob("*.log"))
    assert server.log_path in logs
    assert any("om.accepted" in path.read_text() for path in logs)
    session_prefix = CONTACTS_SESSION_ID.split("!")[1][:20]
    for path in logs:
        text = path.read_text()
        assert CONTACTS_SESSION_ID not in text, path
        assert session_prefix not in text, path
