"""Access control's parts: roles, the keyring, the rate limiter, secrets from files."""

import pytest

from services.gateway.access import (
    ROLE_PERMISSIONS,
    Credential,
    Keyring,
    Permission,
    RateLimiter,
    Role,
    allows,
    credential_id,
    digest,
    retry_after_header,
)
from shared.config import Settings


def env_key(secret: str, source: str = "web") -> Credential:
    return Credential(credential_id(digest(secret)), "write_key", source, None, digest(secret),
                      "env")


def test_an_admin_holds_every_permission_a_role_can_grant():
    assert ROLE_PERMISSIONS[Role.ADMIN] == set(Permission) - {Permission.PUBLIC,
                                                              Permission.TRACK}


def test_a_marketer_sees_no_compliance_page_and_configures_no_access():
    marketer = ROLE_PERMISSIONS[Role.MARKETER]
    assert {Permission.SEGMENTS_WRITE, Permission.DESTINATIONS_READ,
            Permission.PROFILES_READ} <= marketer
    assert not marketer & {Permission.CONSENT_READ, Permission.AUDIT_READ, Permission.DSR_READ,
                           Permission.PRIVACY_READ, Permission.REJECTIONS_READ,
                           Permission.CREDENTIALS_ADMIN}


def test_a_compliance_officer_reads_all_history_and_handles_requests_but_configures_nothing():
    compliance = ROLE_PERMISSIONS[Role.COMPLIANCE]
    assert {Permission.HISTORY_READ, Permission.CONSENT_READ, Permission.AUDIT_READ,
            Permission.DSR_READ, Permission.DSR_HANDLE} <= compliance
    assert all(p.value.endswith(":read") or p is Permission.DSR_HANDLE for p in compliance)


def test_a_write_key_is_never_a_token_and_nobody_is_allowed_without_a_role():
    keyring = Keyring()
    keyring.put(env_key("wk_1"))
    assert keyring.write_key("wk_1").name == "web"
    assert keyring.token("wk_1") is None
    assert not allows(keyring.write_key("wk_1"), Permission.PROFILES_READ)
    assert not allows(None, Permission.PROFILES_READ)
    assert allows(None, Permission.PUBLIC)


def test_the_keyring_keeps_digests_not_secrets_and_revocation_is_final():
    keyring = Keyring()
    keyring.put(env_key("wk_secret"))
    [credential] = keyring.listed("write_key")
    assert "wk_secret" not in repr(credential)
    keyring.revoke(credential.credential_id, "2026-11-30T00:00:00Z")
    keyring.put(env_key("wk_secret"))  # the environment still names it after a restart
    assert keyring.write_key("wk_secret") is None


def test_the_rate_limiter_admits_a_burst_then_says_how_long_to_wait():
    now = [100.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.admit("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.admit("k") == pytest.approx(0.5)
    assert limiter.admit("other") == 0.0  # per key
    now[0] += 0.5
    assert limiter.admit("k") == 0.0
    assert retry_after_header(0.2) == "1" and retry_after_header(2.1) == "3"


def test_a_rate_of_zero_limits_nothing():
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.admit("k") == 0.0 for _ in range(1000))


def test_secrets_come_from_mounted_files(tmp_path, monkeypatch):
    (tmp_path / "keys").write_text("web=wk_file_1\napp=wk_file_2\n")
    (tmp_path / "admin").write_text("tok_admin_from_file\n")
    (tmp_path / "tokens").write_text("ana=marketer:tok_a,carl=compliance:tok_c")
    for name in ("TESSERA_WRITE_KEYS", "TESSERA_ADMIN_TOKEN", "TESSERA_API_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TESSERA_WRITE_KEYS_FILE", str(tmp_path / "keys"))
    monkeypatch.setenv("TESSERA_ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("TESSERA_API_TOKENS_FILE", str(tmp_path / "tokens"))
    settings = Settings.from_env()
    assert settings.write_keys == {"wk_file_1": "web", "wk_file_2": "app"}
    assert settings.admin_token == "tok_admin_from_file"
    assert settings.api_tokens == {"tok_a": ("ana", "marketer"), "tok_c": ("carl", "compliance")}


def test_a_secret_set_both_ways_or_a_token_with_an_unknown_role_is_refused(tmp_path,
                                                                           monkeypatch):
    (tmp_path / "admin").write_text("x")
    monkeypatch.setenv("TESSERA_ADMIN_TOKEN", "y")
    monkeypatch.setenv("TESSERA_ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    with pytest.raises(ValueError, match="not both"):
        Settings.from_env()
    monkeypatch.delenv("TESSERA_ADMIN_TOKEN_FILE")
    monkeypatch.setenv("TESSERA_API_TOKENS", "eve=root:tok_e")
    with pytest.raises(ValueError, match="role of 'eve'"):
        Settings.from_env()
