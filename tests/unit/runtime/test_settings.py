from pathlib import Path

import pytest

from services.config.settings import ConfigSettings
from services.runtime import settings


def test_defaults_load_with_plaintext_allowed_on_loopback() -> None:
    loaded = settings.load(settings.RuntimeSettings, {"DEVMESH_INSECURE": "1", "DEVMESH_AUTH": "off"})
    assert loaded.grpc_addr == "127.0.0.1:50051"
    assert not loaded.tls_enabled


def test_no_certificates_and_no_insecure_flag_is_refused() -> None:
    with pytest.raises(settings.SettingsError, match="DEVMESH_TLS_CERT_FILE"):
        settings.load(settings.RuntimeSettings, {})


def test_plaintext_is_refused_off_loopback() -> None:
    with pytest.raises(settings.SettingsError, match="only on loopback"):
        settings.load(
            settings.RuntimeSettings, {"DEVMESH_INSECURE": "1", "DEVMESH_GRPC_ADDR": "0.0.0.0:50051"}
        )


def test_a_partial_certificate_set_names_what_is_missing() -> None:
    with pytest.raises(settings.SettingsError) as caught:
        settings.load(settings.RuntimeSettings, {"DEVMESH_TLS_CERT_FILE": "/c.pem"})
    assert "DEVMESH_TLS_KEY_FILE" in str(caught.value)
    assert "DEVMESH_TLS_CA_FILE" in str(caught.value)


def test_vault_needs_its_approle() -> None:
    with pytest.raises(settings.SettingsError, match="DEVMESH_VAULT_ROLE_ID"):
        settings.load(
            settings.RuntimeSettings, {"DEVMESH_INSECURE": "1", "DEVMESH_VAULT_ADDR": "http://127.0.0.1:1"}
        )


def test_auth_needs_vault_to_verify_credentials() -> None:
    with pytest.raises(settings.SettingsError, match="DEVMESH_VAULT_ADDR"):
        settings.load(settings.RuntimeSettings, {"DEVMESH_INSECURE": "1"})


def test_auth_can_be_off_only_on_loopback() -> None:
    tls = {"DEVMESH_TLS_CERT_FILE": "/c", "DEVMESH_TLS_KEY_FILE": "/k", "DEVMESH_TLS_CA_FILE": "/a"}
    with pytest.raises(settings.SettingsError, match="DEVMESH_AUTH=off is allowed only on a loopback"):
        settings.load(
            settings.RuntimeSettings, {"DEVMESH_AUTH": "off", "DEVMESH_GRPC_ADDR": "0.0.0.0:1", **tls}
        )
    assert settings.load(settings.RuntimeSettings, {"DEVMESH_AUTH": "off", **tls}).auth == "off"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DEVMESH_RATE_LIMITS", "admin=10/20", "`*`"),
        ("DEVMESH_RATE_LIMITS", "admin=fast,*=1/1", "per second"),
        ("DEVMESH_RATE_LIMITS", "*=0/5", "positive"),
        ("DEVMESH_AUTH_MESH_ROLES", "spiffe://x", "glob"),
        ("DEVMESH_AUTH", "maybe", "required, off"),
        ("DEVMESH_RATE_LIMIT_FALLBACK", "pray", "local, refuse"),
        ("DEVMESH_REDIS_BATCH_WINDOW", "1", "between 0 and 0.1"),
        ("DEVMESH_REDIS_BATCH_WINDOW", "-0.001", "between 0 and 0.1"),
        ("DEVMESH_REDIS_BATCH_WINDOW", "nan", "between 0 and 0.1"),
    ],
)
def test_access_settings_are_checked(name: str, value: str, says: str) -> None:
    with pytest.raises(settings.SettingsError) as caught:
        settings.load(settings.RuntimeSettings, {"DEVMESH_INSECURE": "1", "DEVMESH_AUTH": "off", name: value})
    assert name in str(caught.value) and says in str(caught.value)


def test_values_are_parsed_into_their_types() -> None:
    loaded = settings.load(
        settings.RuntimeSettings,
        {
            "DEVMESH_MAX_CONCURRENT_RPCS": "7",
            "DEVMESH_REDIS_WAIT_AOF": "off",
            "DEVMESH_INSECURE": "1",
            "DEVMESH_AUTH": "off",
        },
    )
    assert loaded.max_concurrent_rpcs == 7
    assert loaded.redis_wait_aof is False


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(settings.SettingsError) as caught:
        settings.load(
            settings.RuntimeSettings,
            {
                "DEVMESH_GRPC_ADDR": "nowhere",
                "DEVMESH_REDIS_URL": "http://x",
                "DEVMESH_MAX_CONCURRENT_RPCS": "-1",
            },
        )
    message = str(caught.value)
    assert "DEVMESH_GRPC_ADDR" in message
    assert "DEVMESH_REDIS_URL" in message
    assert "DEVMESH_MAX_CONCURRENT_RPCS" in message


def test_service_settings_have_env_names_and_descriptions() -> None:
    rows = settings.describe(ConfigSettings)
    assert rows[0][:2] == ("DEVMESH_CONFIG_MAX_DOCUMENT_BYTES", "1048576")
    assert all(description for _, _, description in rows)


def test_a_vault_ca_file_that_is_not_there_is_refused(tmp_path: Path) -> None:
    env = {"DEVMESH_INSECURE": "1", "DEVMESH_AUTH": "off", "DEVMESH_VAULT_CA_FILE": str(tmp_path / "ca.pem")}
    with pytest.raises(settings.SettingsError, match="DEVMESH_VAULT_CA_FILE"):
        settings.load(settings.RuntimeSettings, env)
    (tmp_path / "ca.pem").write_text("")
    assert settings.load(settings.RuntimeSettings, env).vault_ca_file == str(tmp_path / "ca.pem")
