"""crm_kit.imports: CSV cells -> a bulk create item, per field type, loaded by marshmallow as the
bulk create loads it (no database)."""

from __future__ import annotations

import datetime as dt
import decimal
from types import SimpleNamespace
from typing import Any

import pytest
from marshmallow import RAISE, Schema, fields, validate

from crm_kit.imports.jobs import Importer, RowRefused, cell_value, cells_to_item, digest, row_key
from crm_kit.web.fields import Currency, Money, StrictBoolean, Text, Timestamp


class Item(Schema):
    key = Text(required=True, validate=validate.Length(min=1, max=200))
    title = Text(required=True)
    amount = Money(places=2, allow_none=True)
    currency = Currency(allow_none=True)
    probability = fields.Integer(strict=True, allow_none=True)
    ratio = fields.Float(allow_none=True)
    flag = StrictBoolean()
    close = fields.Date(allow_none=True)
    at = Timestamp(allow_none=True)
    group_ids = fields.List(fields.String())
    nested = fields.Nested(Schema.from_dict({"x": fields.String()}))


def _importer() -> Importer:
    schema = Item()
    schema.unknown = RAISE
    return Importer("things", "things:create", schema, lambda session, identity, items: [])


def _row(cells: list[str], number: int = 2) -> Any:
    return SimpleNamespace(cells=cells, number=number, digest=digest(["a"], cells), occurrence=0)


COLUMNS = ["Title", "Amount", "Currency", "Probability", "Ratio", "Flag", "Close", "At", "Groups", "Ref"]
MAPPING = {"Title": "title", "Amount": "amount", "Currency": "currency", "Probability": "probability",
           "Ratio": "ratio", "Flag": "flag", "Close": "close", "At": "at", "Groups": "group_ids"}


def test_every_field_type_loads_from_its_cell():
    importer = _importer()
    assert set(importer.targets) == set(MAPPING.values())  # not key, not a nested object
    job = {"columns": COLUMNS, "mapping": MAPPING, "key_column": None}
    cells = [" Acme ", "1250.50", "EUR", "40", "0.5", "yes", "2027-01-31", "2026-12-06T10:00:00+01:00",
             "g1; g2 ;;g3", "R-1"]
    item = cells_to_item(importer, job, _row(cells))
    loaded = importer.item_schema.load(item)
    assert loaded["title"] == "Acme" and loaded["amount"] == decimal.Decimal("1250.50")
    assert (loaded["currency"], loaded["probability"], loaded["ratio"], loaded["flag"]) == ("EUR", 40, 0.5, True)
    assert loaded["close"] == dt.date(2027, 1, 31) and loaded["at"] == dt.datetime(2026, 12, 6, 9, tzinfo=dt.UTC)
    assert loaded["group_ids"] == ["g1", "g2", "g3"] and loaded["key"].startswith("row:")


def test_empty_cells_are_left_out_and_bad_ones_fail_as_the_bulk_create_says():
    importer = _importer()
    job = {"columns": COLUMNS, "mapping": MAPPING, "key_column": "Ref"}
    item = cells_to_item(importer, job, _row(["T", "", "  ", "fifty", "", "maybe", "", "", "", "R-2"]))
    assert item == {"title": "T", "probability": "fifty", "flag": "maybe", "key": "R-2"}
    with pytest.raises(Exception) as refused:
        importer.item_schema.load(item)
    assert set(refused.value.messages) == {"probability", "flag"}  # type: ignore[attr-defined]
    for cells in (["T"], ["T", "", "", "", "", "", "", "", "", "  "]):  # a short row: the rest is empty
        with pytest.raises(RowRefused) as empty:
            cells_to_item(importer, job, _row(cells))
        assert empty.value.errors == [{"field": "Ref", "message": "The key column is empty ('Ref')."}]


@pytest.mark.parametrize(("cell", "value"), [("true", True), ("No", False), ("1", True), ("off", False),
                                              ("perhaps", "perhaps")])
def test_booleans(cell: str, value: Any):
    assert cell_value(StrictBoolean(), cell) == value


def test_keys_differ_for_identical_rows_and_stay_the_same_for_the_same_file():
    one, two = row_key(digest(["a"], ["x"]), 0, 200), row_key(digest(["a"], ["x"]), 1, 200)
    assert one != two and one == row_key(digest(["a"], ["x"]), 0, 200)
    assert row_key(digest(["a"], ["x"]), 0, 200) != row_key(digest(["b"], ["x"]), 0, 200)  # the header counts
