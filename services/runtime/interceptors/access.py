"""Who may call what, how often: authentication, authorization and the rate limit, in order.

1. Authentication turns the call's credentials into a Principal or refuses with
   UNAUTHENTICATED and a reason (`identity.authenticator`).
2. Authorization checks the permission the contract declares for the method against the
   principal's role (`identity.roles`), before the service looks at the request, so that a
   refusal never reveals whether a resource exists.
3. The rate limit charges the method's declared cost to the principal (`ratelimit`); over the
   limit the call fails with RESOURCE_EXHAUSTED, RetryInfo and QuotaFailure. Every answer
   carries `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset`: `admit`
   returns them and the call pipeline sends them (`ResponseHeaders`).

Public methods (health, reflection, the JWKS) skip all three.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import NoReturn

from grpc import aio

from services.runtime import request_context
from services.runtime.errors import (
    PermissionDenied,
    QuotaViolation,
    ResourceExhausted,
    ServiceError,
    describe_delay,
)
from services.runtime.identity import roles
from services.runtime.identity.authenticator import Authenticator
from services.runtime.identity.principal import Principal
from services.runtime.interceptors.base import Metadata
from services.runtime.interceptors.errors import ErrorTranslator, end_call
from services.runtime.logging import get_logger
from services.runtime.methods import MethodInfo
from services.runtime.ratelimit import Limit, RateLimiter
from services.runtime.telemetry import ACCESS_CHECK, AUTH_FAILURES, PERMISSION_DENIALS

log = get_logger(__name__)


class Access:
    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter | None,
        limits: Mapping[str, Limit],
        translators: Sequence[ErrorTranslator] = (),
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._limits = dict(limits)
        self._key_limits: dict[tuple[float, int], Limit] = {}  # keys' own limits, made once
        self._translators = list(translators)

    @staticmethod
    def applies(info: MethodInfo) -> bool:
        return not info.public

    def limit_for(self, principal: Principal) -> Limit:
        if principal.rate_per_second > 0:
            spec = (principal.rate_per_second, principal.rate_burst)
            limit = self._key_limits.get(spec)
            if limit is None:
                if len(self._key_limits) > 10_000:  # as many as keys with limits of their own
                    self._key_limits.clear()
                burst = principal.rate_burst or max(1, math.ceil(2 * principal.rate_per_second))
                limit = self._key_limits[spec] = Limit(principal.rate_per_second, burst)
            return limit
        return self._limits.get(principal.role) or self._limits["*"]

    async def admit(
        self, info: MethodInfo, context: aio.ServicerContext, metadata: Metadata
    ) -> tuple[tuple[str, str], ...]:
        """Let the call (with its invocation `metadata`) through, or end it with the refusal
        (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE when a dependency
        is down). Returns the rate-limit headers the answer carries."""
        start = time.perf_counter()
        try:
            return await self._admit(info, context, metadata)
        finally:
            ACCESS_CHECK.observe(time.perf_counter() - start)

    async def _admit(
        self, info: MethodInfo, context: aio.ServicerContext, metadata: Metadata
    ) -> tuple[tuple[str, str], ...]:
        try:
            principal, credential = await self._authenticator.authenticate(context, metadata)
        except ServiceError as refused:
            AUTH_FAILURES.labels(refused.reason).inc()
            end_call(context, refused, info)
        except Exception as exc:
            self._dependency_failed(exc, info, context)
        request_context.caller.set(principal)
        if credential:
            request_context.forwardable.set(credential)
        if not principal.allows(info.permission):
            PERMISSION_DENIALS.labels(info.permission).inc()
            hint = (
                "" if principal.role in roles.ROLES else f" (role {principal.role or 'none'} grants nothing)"
            )
            end_call(
                context,
                PermissionDenied(
                    f"{principal.name} lacks permission {info.permission}{hint}",
                    metadata={"permission": info.permission},
                ),
                info,
            )
        if self._limiter is None:
            return ()
        try:
            decision = await self._limiter.check(
                principal.name, self.limit_for(principal), info.rate_limit_cost
            )
        except ServiceError as refused:
            end_call(context, refused, info)
        headers = decision.headers()
        if not decision.admitted:
            end_call(
                context,
                ResourceExhausted(
                    f"rate limit of {principal.name} exceeded; retry in {describe_delay(decision.retry_after)}",
                    retry_after=decision.retry_after,
                    quota_violations=[
                        QuotaViolation(
                            subject=principal.name,
                            description=f"{decision.limit} requests burst; {info.method} costs {info.rate_limit_cost}",
                        )
                    ],
                    reason="RATE_LIMITED",
                ),
                info,
                headers,
            )
        return headers

    def _dependency_failed(self, exc: Exception, info: MethodInfo, context: aio.ServicerContext) -> NoReturn:
        for translate in self._translators:
            translated = translate(exc)
            if translated is not None:
                log.warning("auth.dependency_failed", error=type(exc).__name__, reason=translated.reason)
                end_call(context, translated, info)
        raise exc
