from services.config.read_cache import RevisionCache


def test_a_value_is_served_only_at_the_revision_it_was_computed_at() -> None:
    cache: RevisionCache[str, str] = RevisionCache(4)
    cache.put("k", 7, "v")
    assert cache.get("k", 7) == "v"
    assert cache.get("k", 8) is None


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: RevisionCache[str, int] = RevisionCache(2)
    cache.put("a", 1, 1)
    cache.put("b", 1, 2)
    assert cache.get("a", 1) == 1  # a is now the most recent
    cache.put("c", 1, 3)
    assert cache.get("b", 1) is None
    assert cache.get("a", 1) == 1


def test_get_or_build_builds_once_per_revision() -> None:
    cache: RevisionCache[str, int] = RevisionCache(4)
    builds: list[int] = []

    def build() -> int:
        builds.append(1)
        return len(builds)

    assert cache.get_or_build("k", 1, build) == 1
    assert cache.get_or_build("k", 1, build) == 1
    assert cache.get_or_build("k", 2, build) == 2
    assert len(builds) == 2
