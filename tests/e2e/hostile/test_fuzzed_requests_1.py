"""Random and adversarial requests through the real edge, shard 1 of calls.FUZZ_SHARDS."""

from tests.e2e.hostile.calls import fuzz_test

test_random_and_adversarial_requests_get_a_clear_status = fuzz_test(1)
