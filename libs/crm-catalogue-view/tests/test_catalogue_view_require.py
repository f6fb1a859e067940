"""A reference to a catalogue entry the service does not know is refused in words a person reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueView
from crm_catalogue_view.model import VIEW, CatalogueReferenceError
from crm_kit.errors import Invalid


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    VIEW.metadata.create_all(engine, tables=[VIEW])
    with Session(engine) as s:
        yield s


@pytest.mark.parametrize("entity, words", [
    ("priorities", "lead priority"), ("categories", "lead category"), ("stage_groups", "lead stage group"),
    ("sources", "lead source"), ("stage", "lead stage"),
])
def test_an_unknown_entry_is_named_in_the_singular(session: Session, entity: str, words: str) -> None:
    with pytest.raises(CatalogueReferenceError) as refused:
        CatalogueView().require(session, "nope", kind="lead", entity=entity, field_name="x_id")
    assert refused.value.message == f"There is no {words} with id 'nope'." and refused.value.field == "x_id"
    # A domain error: the web edge answers it as the 422 naming the field, with no conversion on the way.
    assert isinstance(refused.value, Invalid) and refused.value.detail == refused.value.message
    assert refused.value.errors == [{"field": "x_id", "message": refused.value.message}]
