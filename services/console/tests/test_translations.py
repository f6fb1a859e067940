"""Dutch is complete: every string the console shows has a Dutch translation, and the compiled
catalogue the console loads is the one made from the translations (``make console-messages``)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "src" / "crm_console"
NL = SOURCES / "translations" / "nl" / "LC_MESSAGES"
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None}


def _source_messages() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(SOURCES, METHODS, keywords=KEYWORDS):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def _catalogue():
    with open(NL / "messages.po", "rb") as fh:
        return read_po(fh, locale="nl")


def test_every_string_of_the_console_has_a_dutch_translation() -> None:
    catalogue = _catalogue()
    missing = []
    for msgid in sorted(_source_messages()):
        entry = catalogue.get(msgid)
        text = entry.string if entry is not None else None
        if isinstance(text, tuple):
            text = text[0] if all(text) else ""
        if not text or (entry is not None and entry.fuzzy):
            missing.append(msgid)
    assert not missing, f"{len(missing)} strings have no Dutch translation (make console-messages):\n" + \
        "\n".join(missing[:40])


def test_the_compiled_catalogue_is_made_from_the_translations() -> None:
    expected = BytesIO()
    write_mo(expected, _catalogue())
    with open(NL / "messages.mo", "rb") as fh:
        committed = read_mo(fh)
    rebuilt = read_mo(BytesIO(expected.getvalue()))
    assert _entries(committed) == _entries(rebuilt), "messages.mo is stale: run make console-messages"


def _entries(catalogue) -> dict:
    """msgid -> translation; a plural's ids and forms come back from read_mo as lists."""
    def frozen(value):
        return tuple(value) if isinstance(value, list) else value
    return {frozen(m.id): frozen(m.string) for m in catalogue if m.id}
