"""Which mail servers receive a recipient domain: its MX, resolved once per run, grouped by provider.

About two thirds of Dutch gemeenten receive mail through Exchange Online (``*.mail.protection.outlook
.com``): 300 domains, one receiver, which rate-limits a sender as a whole. The scheduler therefore keeps
limits and feedback per MX provider group as well as per domain (``outreach.sending.destination``). A
group is the registrable domain of the domain's most preferred MX host (``outlook.com``,
``google.com``, ``kpnmail.nl``); a domain whose MX cannot be found is a group of its own.

Lookups use dnspython (which email-validator already brings) with a short lifetime, once per domain per
run, on the producer's thread. ``OUTREACH_MX_LOOKUP=off`` turns them off (offline machines, the tests,
which inject their own resolver instead).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger(__name__)

#: Seconds one domain's MX lookup may take, retries included.
LOOKUP_LIFETIME = 3.0
#: After this many lookups in a row that got no answer at all (no resolver, no network), stop asking.
GIVE_UP_AFTER = 5
#: Second-level labels under which registrations sit one level deeper ("co.uk").
_SHARED_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "ac", "edu"})


class MxResolver(Protocol):
    def mx_hosts(self, domain: str) -> list[str] | None:
        """The domain's MX hosts, most preferred first; [] when it has none; None when the lookup got
        no answer at all (timeout, no name server)."""
        ...


class DnsMxResolver:
    """``MxResolver`` over dnspython's stub resolver (the system's name servers)."""

    def __init__(
        self, lifetime: float = LOOKUP_LIFETIME, *, nameservers: list[str] | None = None, port: int = 53
    ) -> None:
        import dns.resolver

        self._resolver = dns.resolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            self._resolver.nameservers = nameservers
            self._resolver.port = port
        self._lifetime = lifetime

    def mx_hosts(self, domain: str) -> list[str] | None:
        import dns.exception
        import dns.resolver

        try:
            answer = self._resolver.resolve(domain, "MX", lifetime=self._lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration):
            return None
        except dns.exception.DNSException:
            return []
        records = sorted(answer, key=lambda record: int(record.preference))
        return [str(record.exchange).rstrip(".").lower() for record in records]


def lookups_enabled() -> bool:
    return os.environ.get("OUTREACH_MX_LOOKUP", "on").strip().lower() not in ("off", "0", "no", "false")


def provider_group(mx_host: str) -> str:
    """The registrable domain of an MX host: ``gemeente-nl.mail.protection.outlook.com`` ->
    ``outlook.com``; ``mx1.example.co.uk`` -> ``example.co.uk``."""
    labels = mx_host.rstrip(".").lower().split(".")
    if len(labels) >= 3 and labels[-2] in _SHARED_SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


class MxGroups:
    """Recipient domain -> destination group for one run. ``resolve`` (blocking: call it on a thread)
    looks up the domains not seen yet, in parallel; ``group`` answers from what was resolved."""

    def __init__(self, resolver: MxResolver | None, *, workers: int = 16) -> None:
        self._resolver = resolver
        self._groups: dict[str, str] = {}
        self._unanswered = 0  # lookups in a row without any answer
        self._workers = workers

    @property
    def enabled(self) -> bool:
        return self._resolver is not None

    def resolve(self, domains: Iterable[str]) -> None:
        resolver = self._resolver
        new = [domain for domain in dict.fromkeys(domains) if domain not in self._groups]
        if resolver is None or not new:
            return
        with ThreadPoolExecutor(max_workers=min(self._workers, len(new))) as pool:
            answers = list(pool.map(resolver.mx_hosts, new))
        for domain, hosts in zip(new, answers, strict=True):
            self._groups[domain] = provider_group(hosts[0]) if hosts else domain
            self._unanswered = self._unanswered + 1 if hosts is None else 0
        if self._unanswered >= GIVE_UP_AFTER:
            log.warning(
                "MX lookups get no answer; grouping by recipient domain only for the rest of this run"
            )
            self._resolver = None

    def group(self, domain: str) -> str:
        return self._groups.get(domain, domain)

    def known(self) -> dict[str, str]:
        return dict(self._groups)


def default_resolver() -> MxResolver | None:
    """The resolver a run uses when none is injected: dnspython, unless lookups are turned off."""
    return DnsMxResolver() if lookups_enabled() else None
