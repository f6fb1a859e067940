"""Backward compatibility: released fields keep their number, type, label and oneof."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

import crm_codegen as codegen

REPO = codegen.RepoPaths(Path(__file__).resolve().parents[3])
FIX = (
    "Never renumber, retype, rename or remove a released field; retire one by "
    "reserving its number and name (proto/README.md)."
)


def _warn_about_additions(report: codegen.CompatReport) -> None:
    if report.additions:
        warnings.warn(
            "not in compat.lock.json yet: "
            + ", ".join(report.additions)
            + "; once final, run `python -m crm_codegen --update-lock` "
            "(for additions only)",
            stacklevel=2,
        )


def test_generated_code_is_compatible_with_the_lock() -> None:
    report = codegen.check_compat(codegen.load_lock(REPO.lock_path))
    assert report.breaking == [], codegen.format_breaking(report)
    _warn_about_additions(report)


def test_proto_sources_are_compatible_with_the_lock() -> None:
    report = codegen.check_compat(codegen.load_lock(REPO.lock_path), REPO.proto_root)
    assert report.breaking == [], codegen.format_breaking(report)
    _warn_about_additions(report)


def test_the_lock_covers_the_envelope() -> None:
    lock = codegen.load_lock(REPO.lock_path)
    envelope = lock["messages"]["crm.events.v1.Envelope"]
    assert envelope["event_id"] == {"number": 1, "type": "string", "label": "optional"}
    assert envelope["probe"]["oneof"] == "payload"
    assert codegen.dump_lock(lock) == REPO.lock_path.read_text(), "lock not in canonical form"


# --------------------------------------------------------------------------- the check bites


@pytest.fixture
def proto_copy(tmp_path: Path) -> codegen.RepoPaths:
    paths = codegen.RepoPaths(tmp_path / "repo")
    shutil.copytree(REPO.proto_root, paths.proto_root)
    (paths.root / codegen.LIBRARY_DIR).mkdir(parents=True)
    return paths


def _edit(paths: codegen.RepoPaths, file_name: str, old: str, new: str) -> None:
    path = paths.proto_root / codegen.PROTO_SUBDIR / file_name
    text = path.read_text()
    assert old in text, f"{old!r} not in {file_name}"
    path.write_text(text.replace(old, new))


def _report(paths: codegen.RepoPaths) -> codegen.CompatReport:
    return codegen.check_compat(codegen.load_lock(paths.lock_path), paths.proto_root)


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (
            "int64 sequence = 3;",
            "crm.events.v1.Probe.sequence: number changed from 2 to 3",
        ),
        (
            "int32 sequence = 2;",
            "crm.events.v1.Probe.sequence: type changed from 'int64' to 'int32'",
        ),
        ("repeated int64 sequence = 2;", "crm.events.v1.Probe.sequence: label changed"),
        ("optional int64 sequence = 2;", "crm.events.v1.Probe.sequence: label changed"),
        (
            "oneof body { int64 sequence = 2; }",
            "crm.events.v1.Probe.sequence: oneof changed",
        ),
        ("int64 seq = 2;", "crm.events.v1.Probe.sequence = 2: removed or renamed"),
        ("", "crm.events.v1.Probe.sequence = 2: removed or renamed"),
        ("reserved 2;", "crm.events.v1.Probe.sequence = 2: removed or renamed"),
    ],
)
def test_breaking_field_changes_are_caught(proto_copy: codegen.RepoPaths, new: str, expected: str) -> None:
    _edit(proto_copy, "probe.proto", "int64 sequence = 2;", new)

    report = _report(proto_copy)

    assert any(item.startswith(expected) for item in report.breaking), report.breaking


def test_retyping_a_message_field_is_caught(proto_copy: codegen.RepoPaths) -> None:
    _edit(
        proto_copy,
        "records.proto",
        "google.protobuf.Timestamp created_at = 10;",
        "string created_at = 10;",
    )

    expected = "crm.events.v1.PipelineRecord.created_at: type changed from 'google.protobuf.Timestamp' to 'string'"
    assert _report(proto_copy).breaking == [expected]


def test_removing_a_message_is_caught(proto_copy: codegen.RepoPaths) -> None:
    _edit(
        proto_copy,
        "records.proto",
        "message RecordDeleted {",
        "message RecordRemoved {",
    )
    _edit(
        proto_copy,
        "envelope.proto",
        "RecordDeleted record_deleted",
        "RecordRemoved record_deleted",
    )

    report = _report(proto_copy)

    assert "crm.events.v1.RecordDeleted: message removed or renamed" in report.breaking
    assert any("record_deleted: type changed" in item for item in report.breaking)


def test_retiring_a_field_with_reservations_is_allowed(
    proto_copy: codegen.RepoPaths,
) -> None:
    _edit(
        proto_copy,
        "probe.proto",
        "int64 sequence = 2;",
        'reserved 2;\n  reserved "sequence";',
    )

    report = _report(proto_copy)

    assert report.breaking == []
    assert report.retired == ["crm.events.v1.Probe.sequence = 2 (reserved)"]


def test_additions_are_not_breaking(proto_copy: codegen.RepoPaths) -> None:
    _edit(
        proto_copy,
        "probe.proto",
        "int64 sequence = 2;",
        "int64 sequence = 2;\n  string origin = 3;",
    )
    _edit(
        proto_copy,
        "probe.proto",
        "message Probe {",
        "message Ping { string id = 1; }\n\nmessage Probe {",
    )

    report = _report(proto_copy)

    assert report.breaking == []
    assert report.additions == [
        "crm.events.v1.Probe.origin = 3",
        "crm.events.v1.Ping (new)",
    ]


def test_update_lock_records_additions(proto_copy: codegen.RepoPaths) -> None:
    _edit(
        proto_copy,
        "probe.proto",
        "int64 sequence = 2;",
        "int64 sequence = 2;\n  string origin = 3;",
    )

    report = codegen.update_lock(proto_copy.proto_root, proto_copy.lock_path)

    assert report.breaking == []
    probe = codegen.load_lock(proto_copy.lock_path)["messages"]["crm.events.v1.Probe"]
    assert probe["origin"] == {"number": 3, "type": "string", "label": "optional"}
    assert _report(proto_copy).additions == []


def test_update_lock_refuses_breaking_changes(
    proto_copy: codegen.RepoPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    before = proto_copy.lock_path.read_text()
    _edit(proto_copy, "probe.proto", "int64 sequence = 2;", "int64 sequence = 3;")

    assert codegen.main(["--update-lock", "--repo-root", str(proto_copy.root)]) == 1

    assert proto_copy.lock_path.read_text() == before
    err = capsys.readouterr().err
    assert "Probe.sequence: number changed" in err
    assert "--update-lock" in err


def test_retired_fields_stay_locked(proto_copy: codegen.RepoPaths) -> None:
    _edit(
        proto_copy,
        "probe.proto",
        "int64 sequence = 2;",
        'reserved 2;\n  reserved "sequence";',
    )
    assert codegen.update_lock(proto_copy.proto_root, proto_copy.lock_path).breaking == []
    # Dropping the reservation later and reusing the number is still caught.
    _edit(
        proto_copy,
        "probe.proto",
        'reserved 2;\n  reserved "sequence";',
        "string origin = 2;",
    )

    assert any("Probe.sequence = 2: removed" in item for item in _report(proto_copy).breaking)


def test_enum_values_are_locked(proto_copy: codegen.RepoPaths) -> None:
    _edit(
        proto_copy,
        "probe.proto",
        "message Probe {",
        "enum ProbeKind {\n  PROBE_KIND_UNSPECIFIED = 0;\n  PROBE_KIND_PING = 1;\n}\n\nmessage Probe {",
    )
    assert codegen.update_lock(proto_copy.proto_root, proto_copy.lock_path).breaking == []
    assert codegen.load_lock(proto_copy.lock_path)["enums"]["crm.events.v1.ProbeKind"] == {
        "PROBE_KIND_UNSPECIFIED": 0,
        "PROBE_KIND_PING": 1,
    }
    _edit(proto_copy, "probe.proto", "PROBE_KIND_PING = 1;", "PROBE_KIND_PING = 2;")

    assert _report(proto_copy).breaking == ["crm.events.v1.ProbeKind.PROBE_KIND_PING: number changed from 1 to 2"]


def test_envelope_layout() -> None:
    # Envelope fields take 1-19; payload types take 20 and up, inside the oneof.
    fields = codegen.load_lock(REPO.lock_path)["messages"]["crm.events.v1.Envelope"]
    for name, entry in fields.items():
        if entry.get("oneof") == "payload":
            assert entry["number"] >= 20, name
            assert entry["type"].startswith("crm.events.v1."), name
        else:
            assert entry["number"] < 20, name
