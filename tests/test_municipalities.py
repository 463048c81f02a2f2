from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine
from sqlmodel import Session, select

from outreach.models import Municipality
from outreach.registry.municipalities import load_municipalities


def test_reference_list_loads_342_municipalities_in_12_provinces(engine: Engine) -> None:
    first = load_municipalities(engine)
    assert (first.inserted, first.total) == (342, 342)
    again = load_municipalities(engine)
    assert (again.inserted, again.updated) == (0, 342)
    with Session(engine) as session:
        rows = session.exec(select(Municipality)).all()
    provinces = Counter(m.province for m in rows)
    assert len(provinces) == 12
    assert provinces["Noord-Brabant"] == 56
    assert provinces["Fryslân"] == 18
    by_code = {m.cbs_code: m for m in rows}
    assert by_code["GM0518"].name == "'s-Gravenhage"
    assert "Den Haag" in by_code["GM0518"].aliases.split("|")
