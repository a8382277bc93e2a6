"""Secrets are masked out of log lines before anything keeps or sends them."""

from __future__ import annotations

import pytest

from services.debugger.secret_masks import SecretMasker, mask_text
from services.runtime.identity.keys import new_key

# Planted secrets, one per format (made up; none is a real credential).
PLANTED = {
    "devmesh": new_key("abcdefghij12"),
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "gitlab": "glpat-" + "x1Y2z3A4b5C6d7E8f9G0",
    "slack": "xoxb-" + "123456789012-abcdefABCDEF",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_known_token_format_is_masked(kind: str) -> None:
    secret = PLANTED[kind]
    masked = mask_text(f"using credential {secret} for upload")
    assert secret not in masked
    assert "[SECRET:" in masked
    assert masked.startswith("using credential ")


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("password=hunter2hunter2 user=bob", "hunter2hunter2"),
        ("TOKEN: 'abc.def.ghi'", "abc.def.ghi"),
        ('{"client_secret": "s3cr3t-value"}', "s3cr3t-value"),
        ("cloning https://ci:Sup3rS3cret@git.example.com/repo.git", "Sup3rS3cret"),
        ("export DATABASE_KEY=Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG", "Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG"),
        ("Authorization: Bearer abcdef0123456789abcdef", "abcdef0123456789abcdef"),
    ],
)
def test_a_value_assigned_to_a_secret_name_or_looking_random_is_masked(line: str, secret: str) -> None:
    assert secret not in mask_text(line)


def test_ordinary_lines_are_left_alone() -> None:
    for line in [
        "Failed password for invalid user admin from 10.0.0.1 port 22 ssh2",
        "ERROR: test_login (tests.test_auth.LoginTest) ... FAIL",
        "version=1.2.3 build=release",
    ]:
        assert mask_text(line) == line


def test_a_pem_block_is_masked_from_begin_to_end() -> None:
    masker = SecretMasker()
    lines = [
        "writing key",
        "-----BEGIN RSA PRIVATE KEY-----",
        "MIIEpAIBAAKCAQEAx4f1",
        "aGVsbG8gd29ybGQ=",
        "-----END RSA PRIVATE KEY-----",
        "done",
    ]
    masked = [masker.line(line) for line in lines]
    assert masked[0] == "writing key" and masked[-1] == "done"
    assert all("MII" not in m and "aGVs" not in m and m.startswith("[SECRET:pem-block]") for m in masked[1:5])


def test_a_mask_is_never_masked_again() -> None:
    once = mask_text(f"token {PLANTED['github']} password=hunter2hunter2")
    assert mask_text(once) == once
