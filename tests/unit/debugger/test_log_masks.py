"""The generic masks turn the values of CI and system log lines into parameters."""

from __future__ import annotations

import pytest

from services.debugger.log_masks import MAX_TOKENS, WILDCARD, mask_line, strip_ansi


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Took 0.26 seconds to build instance.", ["Took", WILDCARD, "to", "build", "instance."]),
        (
            "connection from 84.102.20.2 () at Sun Jul 24 02:38:22 2005",
            ["connection", "from", WILDCARD, "at", WILDCARD],
        ),
        ("started at 2024-05-01T12:00:00.123Z in 12ms", ["started", "at", WILDCARD, "in", WILDCARD]),
        ("pulling sha256:4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d", ["pulling", WILDCARD]),
        ("GET https://example.com/a?b=1 took 5 s", ["GET", WILDCARD, "took", WILDCARD]),
        ("wrote /var/lib/app/data.db:12", ["wrote", WILDCARD]),
        ("proxy.cse.cuhk.edu.hk:5070 open", [WILDCARD, "open"]),
        ("instance 70c1714b-c11b-4c88-b300-239afe1f5ff8 ready", ["instance", WILDCARD, "ready"]),
        ("installed requests 2.31.0", ["installed", "requests", WILDCARD]),
    ],
)
def test_values_become_one_parameter_each(line: str, expected: list[str]) -> None:
    assert mask_line(line) == expected


def test_a_value_written_as_several_words_is_one_parameter() -> None:
    with_size = mask_line("sent 2034 bytes (1.98 KB) to peer")
    without = mask_line("sent 785 bytes to peer")
    assert with_size == without == ["sent", WILDCARD, "to", "peer"]


def test_a_number_inside_a_word_is_part_of_the_word() -> None:
    assert mask_line("open through proxy SOCKS5 on tty2") == [
        "open",
        "through",
        "proxy",
        "SOCKS5",
        "on",
        "tty2",
    ]


def test_a_token_with_a_value_and_a_name_keeps_the_name() -> None:
    assert mask_line("uid=0 attempt=3") == ["uid=<NUM>", "attempt=<NUM>"]


def test_colours_and_progress_redraws_are_what_the_terminal_shows() -> None:
    assert strip_ansi("\x1b[31mFAILED\x1b[0m test_x") == "FAILED test_x"
    assert strip_ansi("Downloading 10%\rDownloading 50%\rDone\r") == "Done"


def test_a_line_of_thousands_of_words_masks_to_a_bounded_template() -> None:
    words = [f"w{i}x" for i in range(5000)]
    tokens = mask_line(" ".join(words))
    assert len(tokens) == MAX_TOKENS + 1
    assert tokens[:MAX_TOKENS] == words[:MAX_TOKENS] and tokens[-1] == WILDCARD
