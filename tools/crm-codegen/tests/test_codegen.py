"""The committed generated code is exactly what proto/ produces, and the check bites."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import crm_codegen as codegen

REPO = codegen.RepoPaths(Path(__file__).resolve().parents[3])


def _copy_repo(tmp_path: Path) -> codegen.RepoPaths:
    """A minimal checkout: proto/ and the generated code of libs/crm-events."""
    copy = codegen.RepoPaths(tmp_path / "repo")
    shutil.copytree(REPO.proto_root, copy.proto_root)
    shutil.copytree(REPO.out_root / codegen.PROTO_SUBDIR, copy.out_root / codegen.PROTO_SUBDIR)
    return copy


def _add_probe_field(paths: codegen.RepoPaths) -> None:
    probe = paths.proto_root / codegen.PROTO_SUBDIR / "probe.proto"
    text = probe.read_text()
    assert "int64 sequence = 2;" in text
    probe.write_text(text.replace("int64 sequence = 2;", "int64 sequence = 2;\n  string origin = 3;"))


def test_committed_generated_code_is_fresh() -> None:
    stale = codegen.stale_files(REPO.proto_root, REPO.out_root)
    assert stale == [], (
        f"run `make proto` ({', '.join(map(str, stale))}); compared with the output "
        f"of grpcio-tools {codegen.grpcio_tools_version()}, see the pin in pyproject.toml"
    )


def test_cli_check_passes_on_the_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    assert codegen.main(["--check", "--repo-root", str(REPO.root)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = codegen.generate(REPO.proto_root, tmp_path / "one")
    second = codegen.generate(REPO.proto_root, tmp_path / "two")
    assert first == second
    assert {path.name for path in first} >= {"envelope_pb2.py", "envelope_pb2.pyi"}
    for path in first:
        assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "two" / path).read_bytes()


def test_changed_proto_without_regeneration_is_stale(tmp_path: Path) -> None:
    paths = _copy_repo(tmp_path)
    _add_probe_field(paths)

    stale = codegen.stale_files(paths.proto_root, paths.out_root)

    assert [(item.path.name, item.reason) for item in stale] == [
        ("probe_pb2.py", "out of date"),
        ("probe_pb2.pyi", "out of date"),
    ]


def test_cli_check_fails_listing_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _copy_repo(tmp_path)
    _add_probe_field(paths)

    assert codegen.main(["--check", "--repo-root", str(paths.root)]) == 1
    err = capsys.readouterr().err
    assert "libs/crm-events/src/crm/events/v1/probe_pb2.py: out of date" in err
    assert "make proto" in err


def test_new_proto_is_missing_and_deleted_proto_is_orphaned(tmp_path: Path) -> None:
    paths = _copy_repo(tmp_path)
    contracts = paths.proto_root / codegen.PROTO_SUBDIR
    (contracts / "extra.proto").write_text(
        'syntax = "proto3";\npackage crm.events.v1;\nmessage Extra { string id = 1; }\n'
    )
    (paths.out_root / codegen.PROTO_SUBDIR / "gone_pb2.py").write_text("# old\n")

    reasons = {item.path.name: item.reason for item in codegen.stale_files(paths.proto_root, paths.out_root)}

    assert reasons == {
        "extra_pb2.py": "missing",
        "extra_pb2.pyi": "missing",
        "gone_pb2.py": "orphaned (no .proto)",
    }


def test_regeneration_makes_the_tree_fresh(tmp_path: Path) -> None:
    paths = _copy_repo(tmp_path)
    _add_probe_field(paths)
    (paths.out_root / codegen.PROTO_SUBDIR / "gone_pb2.pyi").write_text("# old\n")
    untouched = paths.out_root / codegen.PROTO_SUBDIR / "envelope_pb2.py"
    before = untouched.stat().st_mtime_ns

    changed = codegen.regenerate(paths.proto_root, paths.out_root)

    assert {item.path.name for item in changed} == {
        "probe_pb2.py",
        "probe_pb2.pyi",
        "gone_pb2.pyi",
    }
    assert not (paths.out_root / codegen.PROTO_SUBDIR / "gone_pb2.pyi").exists()
    assert untouched.stat().st_mtime_ns == before
    assert codegen.stale_files(paths.proto_root, paths.out_root) == []
    assert "origin" in (paths.out_root / codegen.PROTO_SUBDIR / "probe_pb2.pyi").read_text()
    # Hand-written files next to the generated ones are left alone.
    assert (paths.out_root / codegen.PROTO_SUBDIR / "__init__.py").exists()
    assert (paths.out_root / codegen.PROTO_SUBDIR / "py.typed").exists()


def test_protoc_errors_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _copy_repo(tmp_path)
    probe = paths.proto_root / codegen.PROTO_SUBDIR / "probe.proto"
    probe.write_text(probe.read_text().replace("int64 sequence = 2;", "int64 sequence = 1;"))

    with pytest.raises(codegen.CodegenError, match="protoc failed"):
        codegen.stale_files(paths.proto_root, paths.out_root)
    assert codegen.main(["--check", "--repo-root", str(paths.root)]) == 2
    assert "protoc failed" in capsys.readouterr().err
