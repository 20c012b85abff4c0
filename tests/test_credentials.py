"""Renewing a refused credential once and repeating the call: the one shape the logging-in connectors share."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from connectors.base import Retryable
from connectors.credentials import TokenCache, call_renewing
from tests.harness import captured_logs


@dataclass
class Service:
    """A service that refuses every token not in ``valid``, and a record of what it was sent."""

    valid: set[str]
    seen: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    issue: list[str] = field(default_factory=list)

    def call(self, token: str) -> tuple[str, int]:
        self.seen.append(token)
        return ("ok", 200) if token in self.valid else ("refused", 401)

    def renew(self, stale: str) -> str:
        self.renewed.append(stale)
        return self.issue.pop(0)


def refused(reply: tuple[str, int]) -> bool:
    return reply[0] == "refused"


def test_an_accepted_credential_is_used_once_and_never_renewed() -> None:
    service = Service(valid={"T1"})

    answer = call_renewing(service.call, "T1", renew=service.renew, refused=refused, log_event="test.refused")

    assert answer == ("ok", 200)
    assert service.seen == ["T1"]
    assert service.renewed == []


def test_a_refused_credential_is_renewed_from_the_refused_one_and_the_call_repeated() -> None:
    # given
    service = Service(valid={"T2"}, issue=["T2"])
    # when
    with captured_logs() as logs:
        answer = call_renewing(service.call, "T1", renew=service.renew, refused=refused,
                               log_event="test.refused", call="lookup")
    # then
    assert answer == ("ok", 200)
    assert service.renewed == ["T1"]
    assert service.seen == ["T1", "T2"]
    assert [(entry["event"], entry["call"]) for entry in logs] == [("test.refused", "lookup")]


def test_a_credential_refused_again_after_renewal_is_answered_not_renewed_again() -> None:
    service = Service(valid=set(), issue=["T2", "T3"])

    answer = call_renewing(service.call, "T1", renew=service.renew, refused=refused, log_event="test.refused")

    assert answer == ("refused", 401)
    assert service.seen == ["T1", "T2"]
    assert service.renewed == ["T1"]


def test_a_renewal_that_fails_stops_before_the_second_call() -> None:
    service = Service(valid=set())

    def unreachable(stale: str) -> str:
        raise Retryable("the login service is down")

    with pytest.raises(Retryable, match="login service"):
        call_renewing(service.call, "T1", renew=unreachable, refused=refused, log_event="test.refused")
    assert service.seen == ["T1"]


def test_with_a_token_cache_the_renewed_token_is_the_one_cached() -> None:
    # given: a cached token the service no longer takes
    tokens = TokenCache(None, "t")
    tokens.put("svc", "T1", 600)
    service = Service(valid={"T2"})
    obtained: list[str] = []

    def obtain() -> tuple[str, float]:
        obtained.append("T2")
        return "T2", 600.0

    # when
    answer = call_renewing(service.call, tokens.get("svc") or "",
                           renew=lambda stale: tokens.renew("svc", stale, obtain), refused=refused,
                           log_event="test.refused")
    # then
    assert answer == ("ok", 200)
    assert obtained == ["T2"]
    assert tokens.get("svc") == "T2"
