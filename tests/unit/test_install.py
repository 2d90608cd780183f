"""omgate outside its repository, in-process: built-in defaults that stand alone and the
default inbox's folder (tests/system/test_install_system.py starts omgate)."""

from __future__ import annotations

import json
from pathlib import Path

from service.config import SCHEMA, default_state_folder, load_config


def test_no_built_in_default_names_a_development_file(tmp_path):
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            default = json.dumps(key.builtin_default({}), default=str)
            assert "certs/dev" not in default, f"[{section}] {name}"
    path = tmp_path / "omgate.toml"
    path.write_text('[server]\ncertfile = "s.pem"\nkeyfile = "s.key"\n')
    config = load_config(path, {"STATE_DIRECTORY": str(tmp_path / "state")})
    assert config.client_auth.rules.trust == ()
    assert config.client_auth.mode == "request"
    assert config.inbox.url == f"sqlite:///{tmp_path / 'state' / 'inbox.db'}"


def test_the_default_inbox_is_in_the_state_folder_a_server_is_expected_to_use(tmp_path):
    assert default_state_folder({"STATE_DIRECTORY": "/srv/a:/srv/b"}) == Path("/srv/a")
    assert default_state_folder({}, is_root=True) == Path("/var/lib/omgate")
    assert default_state_folder({"HOME": "/home/ops"}, is_root=False) == \
        Path("/home/ops/.local/state/omgate")
    assert default_state_folder({"HOME": "/home/ops", "XDG_STATE_HOME": "/x"},
                                is_root=False) == Path("/x/omgate")
