"""Importing the government register export into the registry, and re-syncing it after a change.

Each office is identified by the register's id (``contact.register_id``). A first import adds every
office holder of the 342 municipalities, with or without an e-mail address; importing a newer export
updates each office:

- **joined**: a register id not in the registry yet (or out of office there and listed again). A
  hand-imported row of the same office (same address, municipality and role; or without an address in
  the register, the same initials and surname) is taken over instead of adding a second row.
- **changed**: name, party, term dates, marks (locoburgemeester, fractievoorzitter, waarnemend) or
  address differ; each change is listed old -> new.
- **left**: gone from the export, or an end date on or before today: ``term_end`` set, ``active``
  false, so no audience includes them any more; the row stays (``contacts purge`` removes it later).
- **unchanged**: the row is not touched.

Addresses: the register wins when it changes the address it gave (``register_email`` remembers its
last value); an address staff imported by hand stays while the register gives none, or keeps giving
the one it gave before. Nothing is ever deleted. The whole import is one transaction; ``dry_run``
classifies exactly the same and writes nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from outreach.errors import DatabaseError
from outreach.models import Role, utcnow
from outreach.registry.emails import AddressChecker, InvalidAddress
from outreach.registry.keys import email_hash, email_key, office_key, sort_name
from outreach.registry.register import Gemeente, Office, RegisterExport, read_export
from outreach.registry.register_held import MUNICIPALITY, NAMES, OWNED, HeldOffices
from outreach.registry.register_result import Change, RegisterResult
from outreach.registry.register_writes import PendingWrites
from outreach.registry.values import CONTROL_CHARS

NEW = -1  # the holder of an office key that a row inserted by this import takes
MAX_WETHOUDERS = 9
VERIFIED_WITHIN = timedelta(days=365)
_EMAIL_FIELDS = ("email", "email_normalized", "email_key", "email_hash", "office_key")


def import_register(
    engine: Engine, path: Path, *, dry_run: bool = False, today: date | None = None
) -> RegisterResult:
    """Read ``path`` (streamed), then apply it in one transaction; see the module docstring."""
    started = time.perf_counter()
    today = today or date.today()
    export = read_export(path, today=today)
    result = RegisterResult(path=path, dry_run=dry_run, version=export.version, warnings=export.warnings)
    _count_passed_over(export, result)
    file_date = datetime.fromtimestamp(path.stat().st_mtime).date()
    try:
        with engine.connect() as conn, conn.begin() as tx:
            if not conn.execute(select(func.count()).select_from(MUNICIPALITY)).scalar_one():
                raise DatabaseError(
                    "the registry has no municipalities yet", hint="run `outreach init` first"
                )
            _Sync(conn, result, today=today, file_date=file_date).run(export)
            if dry_run:
                tx.rollback()
    except IntegrityError as exc:
        raise DatabaseError(
            f"{path}: another import changed the same contacts at the same time ({exc.orig})",
            hint="run the import again",
        ) from None
    except OperationalError as exc:
        raise DatabaseError(f"{path}: the database refused the import: {exc.orig}") from None
    result.seconds = time.perf_counter() - started
    return result


def _count_passed_over(export: RegisterExport, result: RegisterResult) -> None:
    passed = export.passed_over
    for kind, count in passed.bodies.items():
        result.passed_over[f"other body: {kind}"] += count
    if passed.ended_gemeenten:
        result.passed_over["ended gemeente"] += len(passed.ended_gemeenten)
    if passed.ended_gemeente_functies:
        result.passed_over["office holder of an ended gemeente"] += passed.ended_gemeente_functies
    for functie, count in passed.functies.items():
        result.passed_over[f"functie not imported: {functie}"] += count
    if passed.unmatched_marks:
        result.passed_over["locoburgemeester/fractievoorzitter without another office"] += (
            passed.unmatched_marks
        )
    if passed.unknown_codes:
        result.passed_over["gemeente without a code"] += len(passed.unknown_codes)
    result.unknown_codes.extend(passed.unknown_codes)


def _display(office: Office | None, row: dict[str, Any] | None = None) -> str:
    if office is not None:
        return office.full_name
    assert row is not None
    parts = (row.get("voorletters") or row.get("voornaam"), row.get("tussenvoegsel"), row.get("achternaam"))
    return " ".join(p for p in parts if p) or "(griffie)"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class _Sync:
    def __init__(self, conn: Connection, result: RegisterResult, *, today: date, file_date: date) -> None:
        self.conn = conn
        self.result = result
        self.today = today
        self.file_date = file_date
        self.now = utcnow()
        self.addresses = AddressChecker()
        self.pending = PendingWrites()

    # --- the sync --------------------------------------------------------------------------------

    def run(self, export: RegisterExport) -> None:
        self.held = HeldOffices(self.conn)
        result = self.result
        listed: dict[str, tuple[Gemeente, Office]] = {}
        gemeenten: list[tuple[Gemeente, Any]] = []
        for gemeente in export.gemeenten:
            muni = self.held.municipalities.get(gemeente.cbs_code)
            if muni is None:
                result.unknown_codes.append(f"{gemeente.name} ({gemeente.cbs_code.lower()})")
                result.passed_over["gemeente with a code outreach does not know"] += 1
                continue
            gemeenten.append((gemeente, muni))
            for office in [*gemeente.offices, *_griffie_office(gemeente)]:
                listed.setdefault(office.register_id, (gemeente, office))
        forgotten = self.held.forgotten(list(listed))
        seen: set[str] = set()
        for gemeente, muni in gemeenten:
            result.gemeenten += 1
            self._municipality(gemeente, muni)
            self._anomalies(gemeente, muni)
            source = f"register export {(gemeente.mutated or self.file_date).isoformat()}"
            for office in [*gemeente.offices, *_griffie_office(gemeente)]:
                if office.register_id in seen or listed[office.register_id][0] is not gemeente:
                    continue  # one id listed twice: the first entry counts
                seen.add(office.register_id)
                if office.register_id in forgotten:
                    result.passed_over["erased earlier (contacts forget)"] += 1
                    continue
                self._office(office, int(muni.id), str(muni.name), source)
        ended = {rid: end for g, _ in gemeenten for rid, end in g.ended.items() if rid not in seen}
        self._left(seen, ended, {g.cbs_code: g for g, _ in gemeenten})
        if not self.result.dry_run:
            self.pending.write(self.conn, self.now)

    def _office(self, office: Office, municipality_id: int, municipality: str, source: str) -> None:
        result = self.result
        if CONTROL_CHARS.search(office.full_name + (office.party or "") + (office.email or "")):
            result.passed_over["control character in the entry"] += 1
            result.anomalies[municipality].append(
                f"{office.role} {office.full_name!r} (register id {office.register_id}): a control "
                "character in the name, party or address: not imported"
            )
            return
        email = self._checked_address(office, municipality)
        existing = self.held.registered.get(office.register_id)
        note = None
        merged: list[tuple[str, str, str]] = []
        if existing is None:
            existing = self._take_over(office, municipality_id, email)
            if existing is not None:
                note = f"took over the hand-imported contact #{existing['id']}"
        elif existing["email"] is None:
            # Listed without an address, but staff have imported one for this person since: that row
            # becomes the office (its address kept), the register's row without an address retires.
            taken = self._take_over(office, municipality_id, email)
            if taken is not None:
                self._retire(existing, f"{source}: merged into contact #{taken['id']}")
                merged = [("email", "-", f"{taken['email']} (imported by hand)")]
                note = f"the hand-imported contact #{taken['id']} holds this office now"
                existing = taken
        if existing is None:
            self._insert(office, municipality_id, municipality, email, source)
            return
        values, fields = self._changes(office, existing, email, municipality)
        fields = merged + fields
        kind = "changed" if fields else "unchanged"
        if (note is not None and not merged) or not existing["active"]:
            kind = "joined"
        if values or note is not None or not existing["active"]:
            values.update(register_id=office.register_id, register_email=email, active=True, source=source)
            self.pending.updates.append({"b_id": existing["id"], **values})
            result.sources[source] += 1
        result.count(kind, office.role, municipality)
        if values.get("email", existing["email"]) is None:
            result.without_email += 1
        if kind != "unchanged":
            result.changes.append(
                Change(
                    kind=kind,
                    municipality=municipality,
                    cbs_code=self.held.municipality_codes[municipality_id],
                    role=office.role,
                    name=_display(office),
                    register_id=office.register_id,
                    fields=tuple(fields),
                    note=note or (None if existing["active"] else "back in office"),
                )
            )

    def _checked_address(self, office: Office, municipality: str) -> str | None:
        if office.email is None:
            return None
        try:
            self.addresses.normalize(office.email)
        except InvalidAddress as exc:
            self.result.anomalies[municipality].append(
                f"{office.role} {office.full_name}: invalid e-mail address {office.email!r} ({exc}): "
                "stored without an address"
            )
            return None
        return office.email

    def _take_over(self, office: Office, municipality_id: int, email: str | None) -> dict[str, Any] | None:
        """A hand-imported row of the same office: by address, else (one match only) by name."""
        cbs = self.held.municipality_codes[municipality_id]
        if email is not None:
            holder = self.held.holders.get(
                office_key(email_key(self.addresses.normalize(email)), cbs, office.role)
            )
            if holder is not None and holder in self.held.unclaimed:
                return self.held.claim(holder)
        if office.role == Role.GRIFFIE.value:
            return None
        candidates = self.held.by_person.get((municipality_id, office.role, office.name_key), [])
        if len(candidates) == 1 and candidates[0] in self.held.unclaimed:
            return self.held.claim(candidates[0])
        return None

    def _retire(self, row: dict[str, Any], source: str) -> None:
        """A register row without an address whose office a hand-imported row now holds: kept, inactive."""
        self.pending.retired.append(
            {
                "b_id": row["id"],
                "register_id": None,
                "register_email": None,
                "active": False,
                "source": source,
            }
        )

    def _changes(
        self, office: Office, row: dict[str, Any], email: str | None, municipality: str
    ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
        values: dict[str, Any] = {}
        fields: list[tuple[str, str, str]] = []
        for name in NAMES:
            new = getattr(office, name)
            if new is not None and new != row[name]:
                values[name] = new
                fields.append((name, _text(row[name]), _text(new)))
        for name in OWNED:
            new = getattr(office, name)
            if new != (bool(row[name]) if isinstance(new, bool) else row[name]):
                values[name] = new
                fields.append((name, _text(row[name]), _text(new)))
        if "achternaam" in values or "tussenvoegsel" in values:
            values["sort_name"] = sort_name(
                values.get("achternaam", row["achternaam"]), values.get("tussenvoegsel", row["tussenvoegsel"])
            )
        # The register wins when it changes the address it gave; otherwise the stored one stays (an
        # address staff imported by hand, or the register's own).
        if email is not None and email != row["register_email"] and email != row["email"]:
            cbs = self.held.municipality_codes[int(row["municipality_id"])]
            address = self._address(email, cbs, str(row["role"]))
            holder = self.held.holders.get(address["office_key"])
            if holder is not None and holder != row["id"]:
                who = "another contact this import adds" if holder == NEW else f"contact #{holder}"
                self.result.anomalies[municipality].append(
                    f"{office.role} {office.full_name}: the register's new address {email} is already held "
                    f"by {who}: kept {row['email'] or 'no address'}"
                )
            else:
                values.update(address)
                fields.append(("email", _text(row["email"]), email))
                self.held.holders[address["office_key"]] = int(row["id"])
        if email != row["register_email"] and not fields and not values:
            values["register_email"] = email  # bookkeeping only: the row itself is unchanged
        return values, fields

    def _address(self, email: str, cbs: str, role: str) -> dict[str, Any]:
        normalized = self.addresses.normalize(email)
        key = email_key(normalized)
        return {
            "email": email,
            "email_normalized": normalized,
            "email_key": key,
            "email_hash": email_hash(key),
            "office_key": office_key(key, cbs, role),
        }

    def _insert(
        self, office: Office, municipality_id: int, municipality: str, email: str | None, source: str
    ) -> None:
        cbs = self.held.municipality_codes[municipality_id]
        address = dict.fromkeys(_EMAIL_FIELDS)
        if email is not None:
            candidate = self._address(email, cbs, office.role)
            if candidate["office_key"] not in self.held.holders:
                address = candidate
                self.held.holders[candidate["office_key"]] = NEW
            else:
                self.result.anomalies[municipality].append(
                    f"{office.role} {office.full_name}: address {email} is already held by another "
                    "contact in the same office: stored without an address"
                )
        row = {
            "municipality_id": municipality_id,
            "role": office.role,
            **address,
            **{name: getattr(office, name) for name in (*NAMES, *OWNED)},
            "sort_name": sort_name(office.achternaam, office.tussenvoegsel),
            "source": source,
            "imported_at": self.now,
            "updated_at": self.now,
            "active": True,
            "register_id": office.register_id,
            "register_email": email,
            "portfolio": None,
        }
        self.pending.inserts.append(row)
        self.result.count("joined", office.role, municipality)
        self.result.sources[source] += 1
        if address["email"] is None:
            self.result.without_email += 1
        self.result.changes.append(
            Change("joined", municipality, cbs, office.role, _display(office), office.register_id)
        )

    def _left(self, seen: set[str], ended: dict[str, date], gemeenten: dict[str, Gemeente]) -> None:
        """Register rows in office that this export no longer lists, or lists with an end date passed.

        The term end is the export's end date; for someone simply gone from the export, the date the
        register's data on their gemeente last changed (or today), unless an earlier end is stored."""
        self.result.passed_over["end date passed, never in the registry"] += sum(
            1 for rid in ended if rid not in self.held.registered
        )
        if not self.result.passed_over["end date passed, never in the registry"]:
            del self.result.passed_over["end date passed, never in the registry"]
        for register_id, row in self.held.registered.items():
            if register_id in seen or not row["active"]:
                continue
            if row["municipality_id"] is None:
                continue
            cbs = self.held.municipality_codes[int(row["municipality_id"])]
            municipality = self.held.municipality_names[int(row["municipality_id"])]
            gemeente = gemeenten.get(cbs)
            mutated = gemeente.mutated if gemeente is not None else None
            when = ended.get(register_id) or mutated or self.today
            stored = row["term_end"]
            term_end = stored if stored is not None and stored <= when else when
            source = f"register export {(mutated or self.file_date).isoformat()}"
            self.pending.updates.append(
                {"b_id": row["id"], "active": False, "term_end": term_end, "source": source}
            )
            self.result.count("left", str(row["role"]), municipality)
            self.result.changes.append(
                Change(
                    "left",
                    municipality,
                    cbs,
                    str(row["role"]),
                    _display(None, row),
                    register_id,
                    note=("end date in the export" if register_id in ended else "gone from the export")
                    + f", term end {term_end.isoformat()}",
                )
            )

    def _municipality(self, gemeente: Gemeente, muni: Any) -> None:
        new = (gemeente.postal_address_line, gemeente.postal_code, gemeente.postal_city)
        old = (muni.postal_address_line, muni.postal_code, muni.postal_city)
        if any(new) and new != old:
            self.pending.municipality_updates.append(
                {"b_id": muni.id, "line": new[0], "code": new[1], "city": new[2]}
            )
            self.result.municipalities_updated += 1

    def _anomalies(self, gemeente: Gemeente, muni: Any) -> None:
        found = self.result.anomalies[str(muni.name)]
        found.extend(gemeente.notes)
        roles = Counter(o.role for o in gemeente.offices)
        if roles[Role.BURGEMEESTER.value] > 1:
            names = ", ".join(o.full_name for o in gemeente.offices if o.role == Role.BURGEMEESTER.value)
            found.append(f"{roles[Role.BURGEMEESTER.value]} burgemeesters: {names}")
        if roles[Role.WETHOUDER.value] > MAX_WETHOUDERS:
            found.append(
                f"{roles[Role.WETHOUDER.value]} wethouders (more than {MAX_WETHOUDERS}: stale entries?)"
            )
        for office in gemeente.offices:
            if office.voorletters is None:
                found.append(f"{office.role} {office.full_name!r}: a name without initials")
        if gemeente.verified is not None and gemeente.verified < self.today - VERIFIED_WITHIN:
            found.append(
                f"the register's data was last verified on {gemeente.verified.isoformat()}, over a year ago"
            )
        if not found:
            del self.result.anomalies[str(muni.name)]


def _griffie_office(gemeente: Gemeente) -> Iterable[Office]:
    """The griffie's shared mailbox as an office of its own (role griffie, no person)."""
    if gemeente.griffie_email is None:
        return ()
    return (
        Office(
            register_id=f"{gemeente.cbs_code}-griffie",
            role=Role.GRIFFIE.value,
            full_name=f"Griffie {gemeente.name.removeprefix('Gemeente ')}",
            title=None,
            voorletters=None,
            voornaam=None,
            tussenvoegsel=None,
            achternaam=None,
            aanspreekvorm=None,
            party=None,
            term_start=None,
            term_end=None,
            email=gemeente.griffie_email,
        ),
    )
