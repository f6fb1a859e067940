"""Generate the Python code of the event contracts and guard their compatibility.

Run from the repository (``make proto`` calls the first form)::

    python -m crm_codegen                # regenerate, then report compatibility
    python -m crm_codegen --check        # exit 1 listing stale generated files
    python -m crm_codegen --update-lock  # record added fields in compat.lock.json

The generated modules are committed under ``libs/crm-events/src/crm/events/v1``;
``--check`` compiles ``proto/`` into a temporary directory and compares bytes, so
the output depends on the protoc bundled with grpcio-tools (pinned in
``tools/crm-codegen/pyproject.toml``). A build tool, so it lives in ``tools/``: the
runtime library ``crm-events`` holds only what the services import.

The compatibility lock, ``proto/crm/events/v1/compat.lock.json``, is a snapshot of
every released field (message -> field name -> number, type, label and oneof) and
enum value. A field of the lock may never be renumbered, retyped, moved into or
out of a oneof, renamed or removed; retiring one is allowed only when both its
number and its name are reserved. ``--update-lock`` records additions and refuses
to write while a change is breaking.

This module must not import the generated code: it has to work when that code is
missing or broken.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib
import json
import pkgutil
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

PROTO_PACKAGE = "crm.events.v1"
PROTO_SUBDIR = Path("crm", "events", "v1")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")
LOCK_FILE_NAME = "compat.lock.json"
LIBRARY_DIR = Path("libs", "crm-events")

_FDP = descriptor_pb2.FieldDescriptorProto


class CodegenError(RuntimeError):
    """protoc failed, or the tools or the repository could not be found."""


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class RepoPaths:
    """Where the contracts, the generated code and the lock live in a checkout."""

    root: Path

    @property
    def proto_root(self) -> Path:
        """The protoc include root (``proto/``)."""
        return self.root / "proto"

    @property
    def out_root(self) -> Path:
        """The directory protoc writes ``crm/events/v1/*_pb2.py[i]`` under."""
        return self.root / LIBRARY_DIR / "src"

    @property
    def lock_path(self) -> Path:
        """The committed compatibility snapshot."""
        return self.proto_root / PROTO_SUBDIR / LOCK_FILE_NAME


def _is_checkout(directory: Path) -> bool:
    return (directory / "proto" / PROTO_SUBDIR).is_dir() and (directory / LIBRARY_DIR).is_dir()


def find_repo_root(start: Path | None = None) -> Path:
    """Return the checkout containing ``proto/crm/events/v1`` and ``libs/crm-events``.

    An explicit ``start`` must be that directory. Otherwise searches upwards from
    the working directory, then from this file (an editable install lives inside
    the checkout).
    """
    if start is not None:
        if _is_checkout(start):
            return start.resolve()
        msg = f"{start} has no proto/crm/events/v1 or libs/crm-events"
        raise CodegenError(msg)
    for origin in (Path.cwd().resolve(), Path(__file__).resolve()):
        for directory in (origin, *origin.parents):
            if _is_checkout(directory):
                return directory
    msg = "no checkout with proto/crm/events/v1 found; pass --repo-root"
    raise CodegenError(msg)


def proto_files(proto_root: Path) -> list[Path]:
    """The contract files, relative to ``proto_root``, in a stable order."""
    return sorted(path.relative_to(proto_root) for path in (proto_root / PROTO_SUBDIR).glob("*.proto"))


# --------------------------------------------------------------------------- protoc


def _well_known_include() -> str:
    """grpc_tools' copy of google/protobuf/*.proto (Timestamp, Struct, ...)."""
    try:
        return str(resources.files("grpc_tools") / "_proto")
    except ModuleNotFoundError as exc:
        msg = "grpcio-tools is not installed: pip install -e tools/crm-codegen"
        raise CodegenError(msg) from exc


def _run_protoc(proto_root: Path, arguments: Sequence[str]) -> None:
    """Run the bundled protoc on every contract file with ``proto_root`` as cwd.

    Relative paths and a fixed file order keep the output identical from run to
    run and from checkout to checkout.
    """
    proto_root = proto_root.resolve()
    files = proto_files(proto_root)
    if not files:
        msg = f"no .proto files under {proto_root / PROTO_SUBDIR}"
        raise CodegenError(msg)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I.",
        f"-I{_well_known_include()}",
        *arguments,
        *(path.as_posix() for path in files),
    ]
    result = subprocess.run(command, cwd=proto_root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"protoc failed ({result.returncode}):\n{result.stderr.strip()}"
        raise CodegenError(msg)


def generate(proto_root: Path, out_root: Path) -> list[Path]:
    """Compile the contracts into ``out_root``; return the written files (relative)."""
    out_root = out_root.resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    _run_protoc(proto_root, [f"--python_out={out_root}", f"--pyi_out={out_root}"])
    return _generated_files(out_root)


def _generated_files(out_root: Path) -> list[Path]:
    directory = out_root / PROTO_SUBDIR
    return sorted(
        path.relative_to(out_root)
        for path in directory.glob("*")
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    )


# --------------------------------------------------------------------------- freshness


@dataclass(frozen=True)
class StaleFile:
    """A generated file that does not match what the contracts produce now."""

    path: Path
    reason: str  # "out of date", "missing" or "orphaned (no .proto)"

    def __str__(self) -> str:
        return f"{self.path.as_posix()}: {self.reason}"


def _compare(fresh_root: Path, out_root: Path) -> list[StaleFile]:
    fresh = _generated_files(fresh_root)
    stale = []
    for path in fresh:
        target = out_root / path
        if not target.exists():
            stale.append(StaleFile(path, "missing"))
        elif not filecmp.cmp(fresh_root / path, target, shallow=False):
            stale.append(StaleFile(path, "out of date"))
    stale.extend(StaleFile(path, "orphaned (no .proto)") for path in _generated_files(out_root) if path not in fresh)
    return sorted(stale, key=lambda item: item.path)


def stale_files(proto_root: Path, out_root: Path) -> list[StaleFile]:
    """Generate into a temporary directory; list the files of ``out_root`` that differ.

    An empty list means the committed code is exactly what ``proto_root`` produces.
    """
    with tempfile.TemporaryDirectory(prefix="crm-events-codegen-") as tmp:
        fresh_root = Path(tmp)
        generate(proto_root, fresh_root)
        return _compare(fresh_root, out_root)


def regenerate(proto_root: Path, out_root: Path) -> list[StaleFile]:
    """Bring the generated files in ``out_root`` up to date; return what changed.

    Unchanged files are not rewritten; generated files without a .proto are removed.
    """
    with tempfile.TemporaryDirectory(prefix="crm-events-codegen-") as tmp:
        fresh_root = Path(tmp)
        generate(proto_root, fresh_root)
        changed = _compare(fresh_root, out_root)
        for item in changed:
            target = out_root / item.path
            if item.reason.startswith("orphaned"):
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(fresh_root / item.path, target)
        return changed


# --------------------------------------------------------------------------- compatibility

# Lock layout: {"messages": {full name: {field name: {"number", "type", "label"[,
# "oneof"]}}}, "enums": {full name: {value name: number}}}.
Lock = dict[str, dict[str, dict[str, Any]]]


@dataclass
class _MessageShape:
    fields: dict[str, dict[str, Any]]
    reserved_numbers: list[tuple[int, int]]  # [start, end)
    reserved_names: set[str]


@dataclass
class _EnumShape:
    values: dict[str, int]
    reserved_numbers: list[tuple[int, int]]  # [start, end]
    reserved_names: set[str]


@dataclass
class _Schema:
    messages: dict[str, _MessageShape] = field(default_factory=dict)
    enums: dict[str, _EnumShape] = field(default_factory=dict)

    def to_lock(self) -> Lock:
        return {
            "messages": {name: dict(shape.fields) for name, shape in self.messages.items()},
            "enums": {name: dict(shape.values) for name, shape in self.enums.items()},
        }


@dataclass
class CompatReport:
    """The differences between the lock and the current contracts."""

    breaking: list[str] = field(default_factory=list)
    additions: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)  # removed and reserved: allowed


def _type_name(
    fdp: descriptor_pb2.FieldDescriptorProto,
    map_entries: dict[str, descriptor_pb2.DescriptorProto],
) -> str:
    if fdp.type in (_FDP.TYPE_MESSAGE, _FDP.TYPE_ENUM):
        name = fdp.type_name.lstrip(".")
        entry = map_entries.get(name)
        if entry is not None:
            key, value = entry.field
            return f"map<{_type_name(key, map_entries)}, {_type_name(value, map_entries)}>"
        return name
    return _FDP.Type.Name(fdp.type).removeprefix("TYPE_").lower()


def _label(fdp: descriptor_pb2.FieldDescriptorProto) -> str:
    if fdp.proto3_optional:
        return "proto3_optional"
    return _FDP.Label.Name(fdp.label).removeprefix("LABEL_").lower()


def _add_messages(
    schema: _Schema,
    prefix: str,
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> None:
    for message in messages:
        full_name = f"{prefix}.{message.name}"
        if message.options.map_entry:
            continue
        map_entries = {
            f"{full_name}.{nested.name}": nested for nested in message.nested_type if nested.options.map_entry
        }
        fields: dict[str, dict[str, Any]] = {}
        for fdp in sorted(message.field, key=lambda item: item.number):
            entry: dict[str, Any] = {
                "number": fdp.number,
                "type": _type_name(fdp, map_entries),
                "label": _label(fdp),
            }
            if fdp.HasField("oneof_index") and not fdp.proto3_optional:
                entry["oneof"] = message.oneof_decl[fdp.oneof_index].name
            fields[fdp.name] = entry
        schema.messages[full_name] = _MessageShape(
            fields=fields,
            reserved_numbers=[(r.start, r.end) for r in message.reserved_range],
            reserved_names=set(message.reserved_name),
        )
        _add_enums(schema, full_name, message.enum_type)
        _add_messages(schema, full_name, message.nested_type)


def _add_enums(
    schema: _Schema,
    prefix: str,
    enums: Iterable[descriptor_pb2.EnumDescriptorProto],
) -> None:
    for enum in enums:
        schema.enums[f"{prefix}.{enum.name}"] = _EnumShape(
            values={value.name: value.number for value in enum.value},
            reserved_numbers=[(r.start, r.end) for r in enum.reserved_range],
            reserved_names=set(enum.reserved_name),
        )


def _schema_of(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> _Schema:
    schema = _Schema()
    for file in sorted(files, key=lambda item: item.name):
        if file.package != PROTO_PACKAGE:
            continue
        _add_messages(schema, file.package, file.message_type)
        _add_enums(schema, file.package, file.enum_type)
    schema.messages = dict(sorted(schema.messages.items()))
    schema.enums = dict(sorted(schema.enums.items()))
    return schema


def _schema_from_sources(proto_root: Path) -> _Schema:
    with tempfile.TemporaryDirectory(prefix="crm-events-lock-") as tmp:
        descriptor_set = Path(tmp) / "contracts.binpb"
        _run_protoc(proto_root, [f"--descriptor_set_out={descriptor_set}"])
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    return _schema_of(files.file)


def _schema_from_generated_code() -> _Schema:
    package = importlib.import_module(PROTO_PACKAGE)
    files = []
    for module_info in pkgutil.iter_modules(package.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{PROTO_PACKAGE}.{module_info.name}")
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        files.append(file_proto)
    return _schema_of(files)


def load_lock(path: Path) -> Lock:
    """Read a committed lock; a missing file is an empty lock."""
    if not path.exists():
        return {"messages": {}, "enums": {}}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"messages": data.get("messages", {}), "enums": data.get("enums", {})}


def _in_ranges(number: int, ranges: Iterable[tuple[int, int]], *, inclusive: bool) -> bool:
    return any(start <= number <= end if inclusive else start <= number < end for start, end in ranges)


def _compare_schema(lock: Lock, current: _Schema) -> CompatReport:
    report = CompatReport()
    for message_name, locked_fields in sorted(lock["messages"].items()):
        shape = current.messages.get(message_name)
        if shape is None:
            report.breaking.append(f"{message_name}: message removed or renamed")
            continue
        for field_name, locked in locked_fields.items():
            where = f"{message_name}.{field_name}"
            now = shape.fields.get(field_name)
            if now is None:
                number = locked["number"]
                if field_name in shape.reserved_names and _in_ranges(number, shape.reserved_numbers, inclusive=False):
                    report.retired.append(f"{where} = {number} (reserved)")
                else:
                    report.breaking.append(
                        f"{where} = {number}: removed or renamed; restore it, or "
                        f'retire it with `reserved {number};` and `reserved "{field_name}";`'
                    )
                continue
            for key in ("number", "type", "label", "oneof"):
                if locked.get(key) != now.get(key):
                    report.breaking.append(f"{where}: {key} changed from {locked.get(key)!r} to {now.get(key)!r}")
        report.additions.extend(
            f"{message_name}.{name} = {entry['number']}"
            for name, entry in shape.fields.items()
            if name not in locked_fields
        )
    for enum_name, locked_values in sorted(lock["enums"].items()):
        enum_shape = current.enums.get(enum_name)
        if enum_shape is None:
            report.breaking.append(f"{enum_name}: enum removed or renamed")
            continue
        for value_name, number in locked_values.items():
            where = f"{enum_name}.{value_name}"
            now_number = enum_shape.values.get(value_name)
            if now_number is None:
                if value_name in enum_shape.reserved_names and _in_ranges(
                    number, enum_shape.reserved_numbers, inclusive=True
                ):
                    report.retired.append(f"{where} = {number} (reserved)")
                else:
                    report.breaking.append(f"{where} = {number}: removed or renamed; reserve its number and name")
            elif now_number != number:
                report.breaking.append(f"{where}: number changed from {number} to {now_number}")
        report.additions.extend(
            f"{enum_name}.{name} = {number}" for name, number in enum_shape.values.items() if name not in locked_values
        )
    locked_types = set(lock["messages"]) | set(lock["enums"])
    report.additions.extend(f"{name} (new)" for name in [*current.messages, *current.enums] if name not in locked_types)
    return report


def check_compat(lock: Lock, proto_root: Path | None = None) -> CompatReport:
    """Compare ``lock`` with the contracts: ``proto_root``'s sources if given,
    otherwise the descriptors of the generated code that is importable now."""
    current = _schema_from_generated_code() if proto_root is None else _schema_from_sources(proto_root)
    return _compare_schema(lock, current)


def update_lock(proto_root: Path, lock_path: Path) -> CompatReport:
    """Record the current contracts in ``lock_path`` unless a change is breaking.

    Fields retired properly (number and name reserved) stay in the lock, so taking
    the reservation away later is still caught.
    """
    old = load_lock(lock_path)
    current = _schema_from_sources(proto_root)
    report = _compare_schema(old, current)
    if report.breaking:
        return report
    new = current.to_lock()
    for section in ("messages", "enums"):
        for type_name, old_entries in old[section].items():
            merged = {**old_entries, **new[section].get(type_name, {})}
            new[section][type_name] = merged
    for message_name, fields in new["messages"].items():
        new["messages"][message_name] = dict(sorted(fields.items(), key=lambda item: item[1]["number"]))
    for enum_name, values in new["enums"].items():
        new["enums"][enum_name] = dict(sorted(values.items(), key=lambda item: item[1]))
    text = dump_lock(new)
    if not lock_path.exists() or lock_path.read_text(encoding="utf-8") != text:
        lock_path.write_text(text, encoding="utf-8")
    return report


def dump_lock(lock: Lock) -> str:
    """Serialise a lock deterministically, one field or enum value per line."""
    lines = ["{"]
    for s_index, section in enumerate(("messages", "enums")):
        types = sorted(lock[section].items())
        if not types:
            lines.append(f'  "{section}": {{}}' + ("," if s_index == 0 else ""))
            continue
        lines.append(f'  "{section}": {{')
        for t_index, (type_name, entries) in enumerate(types):
            lines.append(f"    {json.dumps(type_name)}: {{")
            items = list(entries.items())
            for e_index, (name, entry) in enumerate(items):
                comma = "," if e_index < len(items) - 1 else ""
                lines.append(f"      {json.dumps(name)}: {json.dumps(entry)}{comma}")
            lines.append("    }" + ("," if t_index < len(types) - 1 else ""))
        lines.append("  }" + ("," if s_index == 0 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_breaking(report: CompatReport) -> str:
    """A message listing the breaking changes and what to do about them."""
    lines = ["Breaking changes to the event contracts (see proto/README.md):"]
    lines += [f"  - {item}" for item in report.breaking]
    lines.append(
        "Fix the .proto files: never renumber, retype, rename or remove a released "
        "field; retire one by reserving its number and name. "
        "`python -m crm_codegen --update-lock` records additions only."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def grpcio_tools_version() -> str:
    """The installed grpcio-tools version (its protoc decides the generated bytes)."""
    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m crm_codegen",
        description="Generate the Python code of proto/crm/events/v1 and check it.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="generate into a temporary directory; exit 1 listing stale files",
    )
    mode.add_argument(
        "--update-lock",
        action="store_true",
        help=f"record added fields in {LOCK_FILE_NAME}; refuses breaking changes",
    )
    parser.add_argument("--repo-root", type=Path, help="default: found from the cwd")
    args = parser.parse_args(argv)

    try:
        paths = RepoPaths(find_repo_root(args.repo_root))
        if args.check:
            return _cli_check(paths)
        if args.update_lock:
            return _cli_update_lock(paths)
        return _cli_generate(paths)
    except CodegenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cli_check(paths: RepoPaths) -> int:
    stale = stale_files(paths.proto_root, paths.out_root)
    if not stale:
        print("generated event contracts are up to date")
        return 0
    print("stale generated files (run `make proto`):", file=sys.stderr)
    for item in stale:
        print(
            f"  {paths.out_root.relative_to(paths.root) / item.path}: {item.reason}",
            file=sys.stderr,
        )
    print(
        f"(compared with the output of grpcio-tools {grpcio_tools_version()}; "
        "the pinned version is in tools/crm-codegen/pyproject.toml)",
        file=sys.stderr,
    )
    return 1


def _cli_update_lock(paths: RepoPaths) -> int:
    report = update_lock(paths.proto_root, paths.lock_path)
    if report.breaking:
        print(format_breaking(report), file=sys.stderr)
        print(f"{LOCK_FILE_NAME} left unchanged.", file=sys.stderr)
        return 1
    for item in report.additions:
        print(f"recorded {item}")
    print(f"{paths.lock_path.relative_to(paths.root)} is up to date")
    return 0


def _cli_generate(paths: RepoPaths) -> int:
    changed = regenerate(paths.proto_root, paths.out_root)
    for item in changed:
        action = "removed" if item.reason.startswith("orphaned") else "wrote"
        print(f"{action} {paths.out_root.relative_to(paths.root) / item.path}")
    if not changed:
        print("generated event contracts were already up to date")
    report = check_compat(load_lock(paths.lock_path), paths.proto_root)
    if report.breaking:
        print(format_breaking(report), file=sys.stderr)
        return 1
    if report.additions:
        print(
            f"{len(report.additions)} addition(s) not in {LOCK_FILE_NAME} yet; once "
            "they are final, record them: python -m crm_codegen --update-lock"
        )
    return 0
