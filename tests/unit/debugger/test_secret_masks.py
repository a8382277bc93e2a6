"""Secrets are masked out of log lines before anything keeps or sends them."""

from __future__ import annotations

import random

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


# Lines as a batch: one pass finds the lines that can hold a secret, and only those pay for
# the patterns. Whatever the batch path skips must be a line the patterns leave alone.
ORDINARY = [
    "[INFO] Downloading from central: https://repo.maven.apache.org/maven2/org/foo/1.0/foo-1.0.pom",
    "BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/_task_2008_0001_m_000590_0/part-00590.",
    "Failed password for invalid user admin from 10.0.0.1 port 22 ssh2",
    "npm ERR! code ERESOLVE",
    "",
]


def _one_by_one(lines: list[str]) -> list[str]:
    masker = SecretMasker()
    return [masker.line(line) for line in lines]


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_known_token_among_ordinary_lines_is_masked_in_a_batch(kind: str) -> None:
    lines = [*ORDINARY, f"uploading with {PLANTED[kind]} now", *ORDINARY]
    masked = SecretMasker().lines(lines)
    assert PLANTED[kind] not in "\n".join(masked)
    assert masked == _one_by_one(lines)


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        # Python's \s holds \v and \x1c-\x1f, RE2's does not: the pre-filter spells them out.
        ("export BUILD_ID=\x0bZx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG", "Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG"),
        ("password:\x1fhunter2hunter2", "hunter2hunter2"),
        # Python's (?i) folds the long s and the Kelvin sign into ASCII letters.
        ("pa\u017f\u017fword=hunter2hunter2", "hunter2hunter2"),
        ("api_\u212aey=hunter2hunter2", "hunter2hunter2"),
        ("value=\u00a0Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG", "Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG"),
        ("cloning https://ci:Sup3rS3cret@git.example.com/repo.git", "Sup3rS3cret"),
        ("Authorization: Bearer abcdef0123456789abcdef", "abcdef0123456789abcdef"),
    ],
)
def test_a_secret_the_pre_filter_must_notice_is_masked_in_a_batch(line: str, secret: str) -> None:
    lines = [*ORDINARY, line, *ORDINARY]
    masked = SecretMasker().lines(lines)
    assert secret not in "\n".join(masked)
    assert masked == _one_by_one(lines)


def test_a_pem_block_split_between_batches_is_masked_to_its_end() -> None:
    masker = SecretMasker()
    first = masker.lines(["writing key", "-----BEGIN RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEAx4f1"])
    second = masker.lines(["aGVsbG8gd29ybGQ=", "-----END RSA PRIVATE KEY-----", "done"])
    assert first[0] == "writing key" and second[-1] == "done"
    assert all(m.startswith("[SECRET:pem-block]") for m in [*first[1:], *second[:2]])


def test_a_line_holding_a_newline_is_masked_like_any_other() -> None:
    lines = ["first", f"token={PLANTED['aws']}\nsecond", "third"]
    assert SecretMasker().lines(lines) == _one_by_one(lines)


def test_random_batches_are_masked_as_line_by_line() -> None:
    # Fragments of secrets, of near-misses and of odd whitespace, glued at random: the batch
    # path must give exactly what the line-by-line path gives.
    fragments = [
        *PLANTED.values(), "password", "Token", "SECRET", "api-key", "key", "=", ":", " ", "\x0b", "\x1c",
        "\t", "\u00a0", "\u017f", "\"", "'", "://", "user", "@", "Bearer ", "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----", "Zx81kQ2vLm9PqR7sT3uW5yA1bC4dE6fG", "/usr/lib/x86_64-linux-gnu/",
        "gh", "gl", "eyJ", "xox", "AKIA", "build", "1.2.3", "[SECRET:x]",
    ]  # fmt: skip
    rng = random.Random(19)
    for _ in range(300):
        lines = ["".join(rng.choices(fragments, k=rng.randint(0, 8))) for _ in range(rng.randint(1, 12))]
        assert SecretMasker().lines(lines) == _one_by_one(lines), lines
