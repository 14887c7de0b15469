"""Connecting to the bloodstream: auth options, server lists, TLS, and no secret in errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from auto_healer.bloodstream import connect, connect_options
from auto_healer.embedded import NatsServer
from auto_healer.errors import ConfigError
from auto_healer.logs import redact_url
from auto_healer.settings import load_settings

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


async def test_token_auth_connects_and_a_wrong_token_is_a_clear_error(tmp_path: Path) -> None:
    """NATS_TOKEN authenticates against a real token-protected server; a wrong one is refused."""
    with NatsServer(tmp_path / "nats", extra_args=("--auth", "t0ken-s3cret")) as server:
        nc = await connect(load_settings(nats_token="t0ken-s3cret").nats, server.url, name="t")
        assert nc.is_connected
        await nc.close()
        with pytest.raises(ConfigError, match="cannot connect to NATS") as err:
            await connect(
                load_settings(nats_token="wrong").nats, server.url, name="t", initial_attempts=1
            )
        assert "t0ken" not in str(err.value)


async def test_credentials_in_the_url_never_reach_an_error(tmp_path: Path) -> None:
    """A user:password@ in NATS_URL is redacted from connection errors."""
    with NatsServer(tmp_path / "nats", extra_args=("--user", "u", "--pass", "p4ss")) as server:
        url = f"nats://u:wrong-pass@127.0.0.1:{server.port}"
        with pytest.raises(ConfigError) as err:
            await connect(load_settings().nats, url, name="t", initial_attempts=1)
        assert "wrong-pass" not in str(err.value)
        assert f"nats://127.0.0.1:{server.port}" in str(err.value)


def test_options_cover_server_lists_creds_nkeys_and_tls(tmp_path: Path) -> None:
    """Server lists, user/password, creds and nkey files and a TLS CA map to nats-py options."""
    creds, seed = tmp_path / "a.creds", tmp_path / "a.nk"
    settings = load_settings(
        nats_user="bee",
        nats_password="pw",
        nats_creds_file=creds,
        nats_nkey_seed_file=seed,
        nats_tls_ca_file=SYSTEM_CA,
    )
    opts = connect_options(settings.nats, "nats://127.0.0.1:1, nats://127.0.0.1:2", name="x")
    assert opts["servers"] == ["nats://127.0.0.1:1", "nats://127.0.0.1:2"]
    assert (opts["user"], opts["password"]) == ("bee", "pw")
    assert opts["user_credentials"] == str(creds)
    assert opts["nkeys_seed"] == str(seed)
    assert isinstance(opts["tls"], ssl.SSLContext)
    assert opts["max_reconnect_attempts"] == -1  # reconnect forever


def test_redact_url_removes_every_userinfo() -> None:
    """Every server of a list loses its user:password@ part."""
    assert redact_url("nats://a:b@h1:4222,nats://c@h2:4222") == "nats://h1:4222,nats://h2:4222"
