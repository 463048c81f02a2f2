"""MX grouping: dnspython against a real DNS server on 127.0.0.1, provider groups, one lookup per domain
per run, and giving up on lookups that never get an answer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from outreach.sending.mx import GIVE_UP_AFTER, DnsMxResolver, MxGroups, provider_group

ZONE = {
    "utrecht.nl.": [(10, "utrecht-nl.mail.protection.outlook.com."), (20, "backup.utrecht.nl.")],
    "zeist.nl.": [(0, "zeist-nl.mail.protection.outlook.com.")],
    "ede.nl.": [(5, "mx2.ede.nl."), (1, "mx1.ede.nl.")],
}


@pytest.fixture
def dns_server() -> Iterator[int]:
    """A UDP DNS server on 127.0.0.1 answering MX queries from ZONE (NXDOMAIN otherwise)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            name = query.question[0].name.to_text()
            if name in ZONE:
                records = [f"{preference} {host}" for preference, host in ZONE[name]]
                response.answer.append(dns.rrset.from_text_list(name, 300, "IN", "MX", records))
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_dnspython_finds_the_mx_hosts_by_preference(dns_server: int) -> None:
    resolver = DnsMxResolver(nameservers=["127.0.0.1"], port=dns_server, lifetime=2.0)
    assert resolver.mx_hosts("utrecht.nl") == ["utrecht-nl.mail.protection.outlook.com", "backup.utrecht.nl"]
    assert resolver.mx_hosts("ede.nl") == ["mx1.ede.nl", "mx2.ede.nl"]
    assert resolver.mx_hosts("nergens.nl") == []


def test_domains_behind_one_provider_are_one_group(dns_server: int) -> None:
    groups = MxGroups(DnsMxResolver(nameservers=["127.0.0.1"], port=dns_server, lifetime=2.0))
    groups.resolve(["utrecht.nl", "zeist.nl", "ede.nl", "nergens.nl"])
    assert groups.known() == {
        "utrecht.nl": "outlook.com",
        "zeist.nl": "outlook.com",
        "ede.nl": "ede.nl",
        "nergens.nl": "nergens.nl",  # no MX: a group of its own
    }


def test_a_silent_name_server_costs_a_few_lookups_then_none() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # takes the queries, never answers
    try:
        resolver = DnsMxResolver(nameservers=["127.0.0.1"], port=silent.getsockname()[1], lifetime=0.2)
        assert resolver.mx_hosts("utrecht.nl") is None
        groups = MxGroups(resolver, workers=1)
        groups.resolve([f"gemeente{n}.nl" for n in range(GIVE_UP_AFTER)])
        assert not groups.enabled
        groups.resolve(["later.nl"])  # no lookup any more
        assert groups.group("later.nl") == "later.nl"
    finally:
        silent.close()


class CountingResolver:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def mx_hosts(self, domain: str) -> list[str] | None:
        self.asked.append(domain)
        return [f"{domain.split('.')[0]}.mail.protection.outlook.com"]


def test_each_domain_is_looked_up_once_per_run() -> None:
    resolver = CountingResolver()
    groups = MxGroups(resolver)
    groups.resolve(["a.nl", "b.nl", "a.nl"])
    groups.resolve(["b.nl", "c.nl"])
    assert sorted(resolver.asked) == ["a.nl", "b.nl", "c.nl"]
    assert {groups.group(d) for d in ("a.nl", "b.nl", "c.nl")} == {"outlook.com"}


@pytest.mark.parametrize(
    ("host", "group"),
    [
        ("gemeente-nl.mail.protection.outlook.com", "outlook.com"),
        ("aspmx.l.google.com.", "google.com"),
        ("mx1.example.co.uk", "example.co.uk"),
        ("mail.kpnmail.nl", "kpnmail.nl"),
        ("localhost", "localhost"),
    ],
)
def test_provider_group_is_the_registrable_domain(host: str, group: str) -> None:
    assert provider_group(host) == group
