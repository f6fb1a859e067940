"""Where attachment bytes live: a small storage interface and its two implementations.

The database keeps an attachment's metadata and its ``storage_key``; the bytes go to an
``AttachmentStore``. Keys are generated here (``new_key``), never taken from a client, and
every store checks them against a strict pattern, so a key cannot name a path outside the
store.

- ``LocalDirectoryStore`` (the default): files under one directory, written to a temporary
  file in the target directory and renamed into place, so a reader never sees half a file
  and a failed upload leaves nothing behind.
- ``S3Store``: any S3-compatible service. boto3 is imported lazily and is not a dependency
  of this package; asking for ``s3`` without boto3 installed fails at start.

``store_from_environment`` picks one from ``CRM_ATTACHMENTS_STORE`` (``local`` | ``s3``),
``CRM_ATTACHMENTS_DIR``, ``CRM_ATTACHMENTS_S3_BUCKET`` and ``CRM_ATTACHMENTS_S3_ENDPOINT``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from crm_kit.settings import ConfigError

CHUNK_SIZE = 64 * 1024
_KEY = re.compile(r"[a-z0-9_-]{3,128}")
_TEMP_PREFIX = ".upload-"


class StorageError(Exception):
    """The store could not do what was asked (disk full, network, permissions...)."""


class UploadTooLarge(StorageError):  # noqa: N818 - reads better at the raise site than ...Error
    """The stream had more than ``max_bytes`` bytes; nothing was kept."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the upload is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class BlobNotFound(StorageError):  # noqa: N818
    """No blob is stored under this key."""


class ByteSource(Protocol):
    """What ``put`` reads from: anything with ``read(size) -> bytes`` (a file, a spooled upload)."""

    def read(self, size: int, /) -> bytes: ...


@runtime_checkable
class AttachmentStore(Protocol):
    """Stores blobs under keys made by ``new_key``."""

    def put(self, key: str, stream: ByteSource, max_bytes: int) -> tuple[int, str]:
        """Copy ``stream`` to ``key`` in chunks; return (size, sha256 hex digest).

        Raises ``UploadTooLarge`` past ``max_bytes`` and ``StorageError`` when the store fails;
        either way nothing remains under ``key``.
        """
        ...

    def open(self, key: str) -> Iterator[bytes]:
        """The blob's bytes in chunks; ``BlobNotFound`` when there is none. The iterator has
        ``close()`` (WSGI servers call it), which releases the file or connection."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error."""
        ...


def new_key() -> str:
    """A fresh random storage key (32 lowercase hex characters)."""
    return uuid.uuid4().hex


def check_key(key: str) -> str:
    """``key`` if it is a key this module could have made; ``ValueError`` otherwise."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def _copy(stream: ByteSource, write: Any, max_bytes: int) -> tuple[int, str]:
    """Copy ``stream`` to ``write`` chunk by chunk, counting and hashing; stop past ``max_bytes``."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return size, digest.hexdigest()
        size += len(chunk)
        if size > max_bytes:
            raise UploadTooLarge(max_bytes)
        digest.update(chunk)
        write(chunk)


class _FileChunks:
    """Iterates an already opened file in chunks and closes it at the end or on ``close()``."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def __iter__(self) -> _FileChunks:
        return self

    def __next__(self) -> bytes:
        chunk = self._file.read(CHUNK_SIZE)
        if not chunk:
            self.close()
            raise StopIteration
        return bytes(chunk)

    def close(self) -> None:
        self._file.close()


class LocalDirectoryStore:
    """Blobs as files under ``root``: ``root/<first two characters of the key>/<key>``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"the attachments directory {self.root} cannot be created: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ConfigError(f"the attachments directory {self.root} is not writable")

    def __repr__(self) -> str:
        return f"LocalDirectoryStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """Where ``key`` lives. Keys are checked, so the path is always inside ``root``."""
        check_key(key)
        path = self.root / key[:2] / key
        if path.parent.parent != self.root:  # cannot happen with a checked key; cheap to be sure
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def put(self, key: str, stream: ByteSource, max_bytes: int) -> tuple[int, str]:
        target = self.path(key)
        if target.exists():
            raise StorageError(f"a blob is already stored under {key!r}")
        try:
            target.parent.mkdir(exist_ok=True)
            fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=target.parent)
        except OSError as exc:
            raise StorageError(f"cannot write to {target.parent}: {exc}") from exc
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:

                def write(chunk: bytes) -> None:
                    try:
                        out.write(chunk)
                    except OSError as exc:  # the disk, not the source: reading errors pass unchanged
                        raise StorageError(f"cannot write {target}: {exc}") from exc

                size, sha256 = _copy(stream, write, max_bytes)
                try:
                    out.flush()
                    os.fsync(out.fileno())
                    out.close()
                    os.replace(temp, target)  # atomic: readers see no file or the whole file
                except OSError as exc:
                    raise StorageError(f"cannot write {target}: {exc}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)
        return size, sha256

    def open(self, key: str) -> Iterator[bytes]:
        try:
            file = self.path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob under {key!r}") from None
        except OSError as exc:
            raise StorageError(f"cannot read the blob {key!r}: {exc}") from exc
        return _FileChunks(file)

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete the blob {key!r}: {exc}") from exc


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); harmless where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _LimitedReader:
    """A file-like view of ``stream`` for boto3 that counts, hashes and stops past a limit."""

    def __init__(self, stream: ByteSource, max_bytes: int) -> None:
        self._stream = stream
        self._max = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()
        self.exceeded = False
        self.source_error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self._stream.read(CHUNK_SIZE if size is None or size < 0 else size)
        except BaseException as exc:  # the client's stream failed, not the store
            self.source_error = exc
            raise
        self.size += len(chunk)
        if self.size > self._max:
            self.exceeded = True
            raise UploadTooLarge(self._max)
        self.digest.update(chunk)
        return chunk


class _BodyChunks:
    """An S3 object's body in chunks, closed at the end or on ``close()``."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._chunks = iter(body.iter_chunks(CHUNK_SIZE))

    def __iter__(self) -> _BodyChunks:
        return self

    def __next__(self) -> bytes:
        try:
            return bytes(next(self._chunks))
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        self._body.close()


class S3Store:
    """Blobs as objects ``<prefix><key>`` in an S3-compatible bucket.

    Credentials and region come from boto3's usual sources (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, instance roles, ...).
    """

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, prefix: str = "",
                 client: Any = None) -> None:
        if client is None:
            try:
                import boto3
            except ImportError:
                raise ConfigError("CRM_ATTACHMENTS_STORE=s3 needs the boto3 package, which is not installed: "
                                  "install boto3 in the service's environment, or use "
                                  "CRM_ATTACHMENTS_STORE=local.") from None
            client = boto3.client("s3", endpoint_url=endpoint_url or None)
        self.bucket = bucket
        self.prefix = prefix
        self.client = client

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, stream: ByteSource, max_bytes: int) -> tuple[int, str]:
        name = self._name(key)
        reader = _LimitedReader(stream, max_bytes)
        try:
            # Managed transfer: small bodies in one PUT, larger ones as a multipart upload
            # (aborted by boto3 when reading fails), read from ``reader`` part by part.
            self.client.upload_fileobj(reader, self.bucket, name)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.client.delete_object(Bucket=self.bucket, Key=name)
            if reader.exceeded:
                raise UploadTooLarge(max_bytes) from None
            if reader.source_error is not None:
                raise reader.source_error from None
            if isinstance(exc, Exception) and not isinstance(exc, StorageError):
                raise StorageError(f"cannot upload {name!r} to bucket {self.bucket!r}: {exc}") from exc
            raise
        return reader.size, reader.digest.hexdigest()

    def open(self, key: str) -> Iterator[bytes]:
        name = self._name(key)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise BlobNotFound(f"no blob under {key!r}") from None
            raise StorageError(f"cannot read {name!r} from bucket {self.bucket!r}: {exc}") from exc
        return _BodyChunks(obj["Body"])

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            raise StorageError(f"cannot delete {name!r} from bucket {self.bucket!r}: {exc}") from exc


STORE_KINDS = ("local", "s3")


def store_from_environment(service: str | None = None, environ: Mapping[str, str] | None = None) -> AttachmentStore:
    """The store the environment asks for; ``ConfigError`` (at start) when it cannot be made.

    - ``CRM_ATTACHMENTS_STORE``: ``local`` (default) or ``s3``.
    - ``CRM_ATTACHMENTS_DIR``: the local store's directory (default ``.run/attachments/<service>``,
      relative to the working directory).
    - ``CRM_ATTACHMENTS_S3_BUCKET`` (required for ``s3``), ``CRM_ATTACHMENTS_S3_ENDPOINT``
      (optional: the URL of an S3-compatible service; empty means AWS). Objects are named
      ``<service>/<key>``, so services can share a bucket.
    """
    env = os.environ if environ is None else environ
    name = service or env.get("CRM_SERVICE_NAME") or "default"
    kind = (env.get("CRM_ATTACHMENTS_STORE") or "local").strip().lower()
    if kind == "local":
        root = env.get("CRM_ATTACHMENTS_DIR") or os.path.join(".run", "attachments", name)
        return LocalDirectoryStore(Path(root).resolve())
    if kind == "s3":
        bucket = (env.get("CRM_ATTACHMENTS_S3_BUCKET") or "").strip()
        if not bucket:
            raise ConfigError("CRM_ATTACHMENTS_STORE=s3 needs CRM_ATTACHMENTS_S3_BUCKET (the bucket's name).")
        endpoint = (env.get("CRM_ATTACHMENTS_S3_ENDPOINT") or "").strip() or None
        return S3Store(bucket, endpoint_url=endpoint, prefix=f"{name}/")
    raise ConfigError(f"CRM_ATTACHMENTS_STORE={kind!r} is invalid: use one of {', '.join(STORE_KINDS)}.")
