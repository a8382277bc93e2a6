"""The template miner groups lines of one event and keeps distinct events apart."""

from __future__ import annotations

from services.debugger.log_masks import MAX_TOKENS
from services.debugger.template_miner import FAMILY_WORDS, MAX_EXAMPLE_CHARS, TemplateMiner


def test_lines_that_differ_in_values_share_a_template() -> None:
    miner = TemplateMiner()
    first = miner.add("Took 0.26 seconds to build instance 42")
    second = miner.add("Took 1.5 seconds to build instance 7")
    assert first is not None and second is not None
    assert first.id == second.id
    assert second.count == 2


def test_lines_that_differ_in_a_meaningful_word_stay_two_templates() -> None:
    miner = TemplateMiner()
    started = miner.add("[instance: 1] VM Started (Lifecycle Event)")
    paused = miner.add("[instance: 1] VM Paused (Lifecycle Event)")
    assert started is not None and paused is not None
    assert started.id != paused.id


def test_lines_that_differ_in_one_word_stay_two_templates_until_the_word_varies_enough() -> None:
    miner = TemplateMiner()
    users = ["cyrus", "news", "test", "root", "guest"]
    ids = []
    for user in users:
        template = miner.add(f"session closed for user {user}")
        assert template is not None
        ids.append(template.id)
    assert len(set(ids[: FAMILY_WORDS - 1])) == FAMILY_WORDS - 1
    assert len(set(ids[FAMILY_WORDS - 1 :])) == 1
    assert all(miner.resolve(i).id == ids[-1] for i in ids)
    assert miner.resolve(ids[0]).text == "session closed for user <*>"


def test_a_template_keeps_its_id_when_it_generalises() -> None:
    miner = TemplateMiner()
    first = miner.add("job 12 finished with code E12")
    assert first is not None
    created_id, created_text = first.id, first.text
    general = miner.add("job 13 finished with code E13")
    assert general is not None
    assert general.id == created_id
    assert general.text != created_text


def test_match_learns_nothing() -> None:
    miner = TemplateMiner()
    miner.add("disk /dev/sda1 is full")
    assert miner.match("disk /dev/sdb2 is full") is not None
    assert miner.match("something else entirely") is None
    assert len(miner) == 1


def test_a_full_template_set_gives_no_template_to_a_line_that_needs_a_new_one() -> None:
    miner = TemplateMiner(max_templates=1)
    assert miner.add("alpha beta") is not None
    assert miner.add("gamma delta") is None
    assert miner.add("alpha beta") is not None


def test_every_replica_names_the_template_a_line_creates_the_same() -> None:
    one, other = TemplateMiner(), TemplateMiner()
    a = one.add("worker lost: heartbeat missed")
    b = other.add("worker lost: heartbeat missed")
    assert a is not None and b is not None and a.id == b.id


def test_long_lines_that_differ_only_past_the_counted_words_share_a_bounded_template() -> None:
    miner = TemplateMiner()
    head = " ".join(f"word{i}" for i in range(MAX_TOKENS))
    first = miner.add(f"{head} {'a' * 9000} tail one", example=f"{head} {'a' * 9000} tail one")
    second = miner.add(f"{head} other tail that is much longer than the first")
    assert first is not None and second is not None and first.id == second.id
    assert len(first.tokens) == MAX_TOKENS + 1
    assert len(first.example) <= MAX_EXAMPLE_CHARS
