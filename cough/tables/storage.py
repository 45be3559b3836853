"""Locations on local disks and object stores, and how a job claims and commits its output
(what SOURCE holds: cough.tables.listing).

Every job resolves each location it is given once, into a :class:`Location` (a pyarrow
filesystem, the path on it and the absolute URI), and passes that object down, so that
``/data/x``, ``file:///data/x``, ``s3://bucket/x`` and ``gs://bucket/x`` go through one
code path. Nothing here renames a directory: object stores cannot (pyarrow's S3 and GCS
filesystems refuse or half-do it). Outputs commit by writing one small object last (see
:class:`Output` and docs/storage.md).

Object stores fail now and then (503 SlowDown, 500, a reset connection, an answer cut short,
a timeout). Each request is retried by the store's client itself (pyarrow's AWS SDK with
:data:`REQUEST_ATTEMPTS`; delta-rs' object_store, cough/tables/delta.py); what those clients
do not catch, cough's one policy, :func:`retry`, does: a whole operation tried again with
backoff, at most :data:`OPERATION_ATTEMPTS` times. A store location's filesystem is a
:class:`StoreHandler` around pyarrow's, so every list, read, write and delete through it, in
the driver or in a Ray worker, goes through that policy, and answers that the SDK takes for
whole but are not (a HEAD or LIST answer cut after its status line reads as an empty file or
folder) are asked again.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import io
import json
import logging
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Iterator, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import CoughError, StoreError, UsageError, errno_note, one_line

T = TypeVar("T")

log = logging.getLogger("cough.storage")

#: The object a job writes into its output before anything else: whose output this is
#: (cough 0.1's outputs had none).
OWNER_FILE = ".cough-output.json"


def cause_of(exc: BaseException) -> str:
    """A storage error in one line: an AWS SDK error as ``SLOW_DOWN (HeadObject): Please reduce
    your request rate.``, anything else as its first line (:func:`cough.errors.one_line`), with
    what its errno means (``ENOSPC: disk full``).

    >>> cause_of(OSError("When reading information for key 'm/model.json' in bucket 'b': AWS Error SLOW_DOWN "
    ...                "during HeadObject operation: Please reduce your request rate."))
    'SLOW_DOWN (HeadObject): Please reduce your request rate.'
    """
    text = one_line(exc)
    if "AWS Error " in text:
        detail = text.split("AWS Error ", 1)[1]
        code, _, rest = detail.partition(" during ")
        operation, _, message = rest.partition(" operation")
        message = message.lstrip(": ").strip()
        return f"{code} ({operation})" + (f": {message}" if message else "")
    if "\u21b3" in str(exc):  # delta-rs' chain of causes, one per line: all of it
        return text
    first = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip()
    line = one_line(ValueError(first.splitlines()[0] if first else type(exc).__name__))
    return line + errno_note(exc, line)


# ------------------------------------------------------------------------------ retries

#: Attempts at one request by the store clients themselves: pyarrow's AWS SDK
#: (``AwsStandardS3RetryStrategy``) and delta-rs' object_store (``max_retries`` = this - 1).
REQUEST_ATTEMPTS = 3
#: Attempts cough makes at one whole operation (:func:`retry`), around the clients' own.
OPERATION_ATTEMPTS = 5
#: The wait before cough's second attempt, doubled before each next one (at most
#: :data:`MAX_BACKOFF_S`), less up to a quarter at random: 1, 2, 4, 8 s, so that an operation
#: outlasts 12 to 20 s of failures (with the clients' own retries) before it gives up.
BACKOFF_S = 1.0
MAX_BACKOFF_S = 8.0
#: Seconds to wait for a connection to a store (pyarrow and delta-rs).
CONNECT_TIMEOUT_S = 10
#: Words of a store's error that trying again cannot change (keys, rights, the bucket).
PERMANENT = ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
             "SignatureDoesNotMatch", "NO_SUCH_BUCKET", "NoSuchBucket", "credentials", "Credentials",
             "NoSuchKey", "NOT_FOUND", "not found", "does not exist", "No such file")

#: Words that mark an error of another type (delta-rs' ``DeltaError``) as a store's I/O failure.
STORE_FAILURE = ("Generic S3 error", "Generic GCS error", "Generic HTTP error")

_retrying: contextvars.ContextVar[bool] = contextvars.ContextVar("cough_store_retrying", default=False)


class Suspect(OSError):
    """An answer that came whole by the client's account but cannot be the store's: a read
    shorter or longer than the object, an object without a modification time, a folder that
    was there a moment ago and is not (:func:`transient`: tried again)."""


def transient(exc: BaseException) -> bool:
    """Whether trying ``exc``'s operation again may succeed: a store's failure (an ``OSError``
    from pyarrow or delta-rs: 503, 500, a reset, a timeout, a cut answer, :class:`Suspect`),
    not a missing file, missing rights or keys, nor any other error.

    >>> transient(OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate."))
    True
    >>> transient(OSError("AWS Error ACCESS_DENIED during HeadObject operation")), transient(FileNotFoundError("x"))
    (False, False)
    >>> transient(Suspect("read 0 of 12310 bytes")), transient(ValueError("a bug"))
    (True, False)
    >>> transient(RuntimeError("Generic DeltaTable error: Generic S3 error: 503 Service Unavailable"))
    True
    """
    if isinstance(exc, Suspect):
        return True
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    text = str(exc)
    if not isinstance(exc, OSError) and not any(word in text for word in STORE_FAILURE):
        return False
    return not any(word in text for word in PERMANENT)


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (from 1) of an operation."""
    delay = min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (attempt - 1))
    return delay * random.uniform(0.75, 1.0)


def retry(operation: Callable[[], T], *, what: str, where: "Location | None" = None,
          attempts: int = OPERATION_ATTEMPTS, inner: bool = False) -> T:
    """``operation()``, tried again after a :func:`transient` failure with :func:`backoff`, at
    most ``attempts`` times; then a :class:`~cough.errors.StoreError` ``cannot <what>: <cause>
    (after N attempts)``. Any other error is raised as it is, at once. ``where``: the location
    it works on, when a local one (a disk's error does not pass) is to be tried once. Inside
    another operation's retry (a read inside a read) ``operation`` is tried once: the
    outermost retry owns the policy, so attempts do not multiply; unless that one says
    ``inner`` (the operations inside keep their own retries and it redoes the whole only for
    what they could not do: a featurize batch whose shard write failed)."""
    if _retrying.get() or (where is not None and where.local):
        return operation()
    token = _retrying.set(not inner)
    try:
        for attempt in range(1, attempts + 1):
            try:
                return operation()
            except Exception as exc:
                if not transient(exc):
                    raise
                if attempt == attempts:
                    raise StoreError(f"cannot {what}: {cause_of(exc)} (after {attempts} attempts)") from exc
                wait = backoff(attempt)
                log.debug("%s failed (%s): attempt %d of %d in %.1f s", what, cause_of(exc), attempt + 1, attempts,
                          wait)
                time.sleep(wait)
        raise AssertionError("unreachable")
    finally:
        _retrying.reset(token)


class StoreHandler(pafs.FileSystemHandler):
    """A pyarrow filesystem handler around an object store's pyarrow filesystem (``inner``):
    every call goes through :func:`retry`, and answers the SDK takes for whole but are not
    are asked again (:meth:`info`, :meth:`listing`, :meth:`open`). Wrapped in
    ``pyarrow.fs.PyFileSystem`` it is what :class:`Location` gives for ``s3://`` and ``gs://``;
    it pickles as the inner filesystem's options, so a Ray worker rebuilds it with the same
    retry settings (pyarrow's own S3 pickling drops the retry strategy)."""

    def __init__(self, factory: Callable, args: tuple):
        self.factory, self.args = factory, args
        self.inner: pafs.FileSystem = factory(*args)
        self.scheme = {"s3": "s3", "gcs": "gs"}.get(self.inner.type_name, self.inner.type_name)

    @classmethod
    def around(cls, fs: pafs.FileSystem) -> "StoreHandler":
        """A handler around ``fs`` (as ``pyarrow.fs.FileSystem.from_uri`` made it); an S3
        filesystem gets cough's request retries and connect timeout."""
        factory, args = fs.__reduce__()
        if isinstance(fs, pafs.S3FileSystem):
            return cls(_s3, (dict(args[0]),))
        return cls(factory, args)

    def __reduce__(self):
        return StoreHandler, (self.factory, self.args)

    def uri(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    # ------------------------------------------------------------------ checked answers

    def info(self, path: str) -> pafs.FileInfo:
        """``path``'s FileInfo, asked again when it cannot be right: an object without a
        modification time (a HEAD answer cut before Last-Modified), or of 0 bytes, or a
        missing one (a LIST answer cut after its status line), must say so twice."""
        info = self.inner.get_file_info(path)
        if info.type == pafs.FileType.File and not info.mtime_ns:
            raise Suspect(f"the store's answer for {self.uri(path)} came without its modification time (cut short?)")
        if (info.type == pafs.FileType.File and info.size == 0) or info.type == pafs.FileType.NotFound:
            again = self.inner.get_file_info(path)
            if (again.type, again.size) != (info.type, info.size):
                raise Suspect(f"the store said {self.uri(path)} was {_shown(info)}, then {_shown(again)}")
        return info

    def listing(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        """A folder's entries; an empty answer (or none at all) must say so twice."""
        try:
            found = self.inner.get_file_info(selector)
        except FileNotFoundError:
            found = None
        if not found:
            try:
                again = self.inner.get_file_info(selector)
            except FileNotFoundError:
                again = None
            if again:
                raise Suspect(f"the store listed nothing in {self.uri(selector.base_dir)}, then {len(again)} entries")
            if found is None:
                raise FileNotFoundError(f"{self.uri(selector.base_dir)} does not exist")
        return found

    def open(self, path: str):
        """A random-access file whose every read gives the bytes asked for
        (:class:`CheckedFile`); one that says it holds 0 bytes (a HEAD answer cut before its
        Content-Length) must say so again."""
        f = self.inner.open_input_file(path)
        if f.size() == 0 and self.info(path).size != 0:
            f.close()
            raise Suspect(f"the store said {self.uri(path)} holds 0 bytes, then more")
        return pa.PythonFile(CheckedFile(f, self.uri(path)), mode="r")

    # ------------------------------------------------------------------ the handler

    def get_type_name(self) -> str:
        return f"cough+{self.inner.type_name}"

    def normalize_path(self, path):
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return [self._info(p) for p in paths]

    def _info(self, path: str) -> pafs.FileInfo:
        return retry(lambda: self.info(path), what=f"reach {self.uri(path)}")

    def get_file_info_selector(self, selector):
        return retry(lambda: self.listing(selector), what=f"list {self.uri(selector.base_dir)}")

    def create_dir(self, path, recursive):
        retry(lambda: self.inner.create_dir(path, recursive=recursive), what=f"create {self.uri(path)}")

    def delete_dir(self, path):
        retry(lambda: self.inner.delete_dir(path), what=f"delete {self.uri(path)}")

    def delete_dir_contents(self, path, missing_dir_ok=False):
        retry(lambda: self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok),
              what=f"delete {self.uri(path)}")

    def delete_root_dir_contents(self):
        raise PermissionError("cough never deletes a whole bucket")

    def delete_file(self, path):
        retry(lambda: self.inner.delete_file(path), what=f"delete {self.uri(path)}")

    def move(self, src, dest):
        retry(lambda: self.inner.move(src, dest), what=f"move {self.uri(src)}")

    def copy_file(self, src, dest):
        retry(lambda: self.inner.copy_file(src, dest), what=f"copy {self.uri(src)}")

    def open_input_stream(self, path):
        return retry(lambda: self.open(path), what=f"read {self.uri(path)}")

    def open_input_file(self, path):
        return retry(lambda: self.open(path), what=f"read {self.uri(path)}")

    def open_output_stream(self, path, metadata):
        return retry(lambda: self.inner.open_output_stream(path, metadata=metadata), what=f"write {self.uri(path)}")

    def open_append_stream(self, path, metadata):
        return self.inner.open_append_stream(path, metadata=metadata)


#: The fewest bytes :class:`CheckedFile` asks the store for at once.
READ_BYTES = 4096


class CheckedFile(io.RawIOBase):
    """A store's file (``f``, pyarrow's) read at a position through cough's retries, each read
    checked to have given the bytes it asked for. The AWS SDK takes a ranged GET whose answer
    was cut after its status line for a whole one, and pyarrow then returns as many bytes as it
    asked for, of memory nothing wrote (Parquet may find a page "smaller than expected", or no
    footer; a recording would hash and decode garbage). So each read goes into a buffer whose
    last bytes hold a random mark first: a read that leaves the mark wrote nothing."""

    def __init__(self, f, uri: str):
        super().__init__()
        self.f, self.uri, self.size, self.pos = f, uri, f.size(), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        n = self.size - self.pos if size is None or size < 0 else min(size, self.size - self.pos)
        if n <= 0:
            return b""
        start = self.pos
        data = retry(lambda: self._read_at(n, start), what=f"read {self.uri}")
        self.pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def _read_at(self, n: int, start: int) -> bytes:
        # At least READ_BYTES, so that an error's answer fits where the SDK writes it: a read
        # of a few bytes failed with "Failed to flush response stream" instead of its 503.
        want = min(max(n, READ_BYTES), self.size - start)
        buf = bytearray(want)
        mark = os.urandom(min(16, want))
        buf[want - len(mark):] = mark
        self.f.seek(start)
        got = self.f.readinto(buf)
        if got != want or buf[want - len(mark):] == mark:
            raise Suspect(f"a read of {want} bytes at {start} of {self.uri} came back empty (an answer cut short?)")
        return bytes(buf) if want == n else bytes(buf[:n])

    def close(self) -> None:
        if not self.closed:
            self.f.close()
        super().close()


def _s3(options: dict) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem with the options ``from_uri`` found (region, endpoint, ...) and
    cough's request retries and connect timeout."""
    options = {**options, "connect_timeout": CONNECT_TIMEOUT_S}
    return pafs.S3FileSystem(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=REQUEST_ATTEMPTS))


def _shown(info: pafs.FileInfo) -> str:
    if info.type == pafs.FileType.File:
        return f"a file of {info.size} bytes"
    return "missing" if info.type == pafs.FileType.NotFound else "a folder"


def _no_aws_credentials() -> bool:
    """Whether none of the usual places holds AWS credentials (the likely cause of an s3 error)."""
    if any(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                                       "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")):
        return False
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", os.path.expanduser("~/.aws/credentials"))
    return not os.path.isfile(shared)


@dataclass(frozen=True)
class Location:
    """A file or folder: ``fs`` (a pyarrow filesystem), ``path`` on it, and ``uri``, the absolute
    form recorded in manifests (an absolute local path, or ``scheme://bucket/key``).

    >>> loc = Location.of("out/features")                # doctest: +SKIP
    >>> loc.uri, loc.join("manifest.json").uri            # doctest: +SKIP
    ('/home/me/out/features', '/home/me/out/features/manifest.json')
    """

    uri: str
    fs: pafs.FileSystem
    path: str

    @classmethod
    def of(cls, where: "str | Location") -> "Location":
        """Resolve a local path or URI once; a :class:`UsageError` for a scheme pyarrow lacks."""
        if isinstance(where, Location):
            return where
        where = str(where)
        if CREDENTIALS.match(where):
            raise UsageError(f"{redacted(where)}: a URI that carries credentials would put them in logs, manifests and "
                             "run records; give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile, "
                             "or the node's role) and the URI without them")
        if "://" not in where:
            path = os.path.abspath(where)
            return cls(path, pafs.LocalFileSystem(), path)
        scheme = where.split("://", 1)[0].lower()
        try:  # an OSError: the store could not be asked (resolving a bucket's region)
            fs, path = retry(lambda: pafs.FileSystem.from_uri(where), what=f"reach {where}")
        except CoughError:
            raise
        except Exception as exc:
            raise UsageError(f"{where}: {scheme}:// is not a storage scheme cough can use ({cause_of(exc)}); "
                             "use a local path, file://, s3:// or gs://") from None
        if not isinstance(fs, pafs.LocalFileSystem):
            fs = pafs.PyFileSystem(StoreHandler.around(fs))
        path = path.rstrip("/") or path
        return cls(f"{scheme}://{path}", fs, path)

    def __str__(self) -> str:
        return self.uri

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def scheme(self) -> str:
        """``s3``, ``gs``, ``file``; empty for a local path."""
        return self.uri.split("://", 1)[0] if "://" in self.uri else ""

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def join(self, *parts: str) -> "Location":
        tail = "/".join(p.strip("/") for p in parts)
        return Location(f"{self.uri.rstrip('/')}/{tail}", self.fs, f"{self.path.rstrip('/')}/{tail}")

    def like(self, path: str) -> "Location":
        """Another path on the same filesystem (e.g. an entry a listing returned)."""
        uri = f"{self.scheme}://{path}" if self.scheme else path
        return Location(uri, self.fs, path)

    def error(self, verb: str, exc: BaseException) -> CoughError:
        """One line naming this location and the cause (and missing AWS credentials, if so);
        a :class:`~cough.errors.StoreError` (a store that kept failing) says its own."""
        hint = ""
        if self.scheme == "s3" and _no_aws_credentials():
            hint = " (no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        if isinstance(exc, StoreError):
            return StoreError(f"{exc}{hint}") if hint else exc
        return CoughError(f"cannot {verb} {self.uri}: {cause_of(exc)}{hint}")

    # -------------------------------------------------------------- reading

    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except Exception as exc:
            raise self.error("reach", exc) from None

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def listdir(self, *, recursive: bool = False) -> list[pafs.FileInfo]:
        """Entries under this folder (none when it does not exist)."""
        try:
            return self.fs.get_file_info(pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True))
        except Exception as exc:
            raise self.error("list", exc) from None

    def open_input(self):
        return self.fs.open_input_stream(self.path)

    def read_bytes(self) -> bytes:
        """The whole file; on a store, a read that ends before the object does is tried again."""
        def read() -> bytes:
            with self.fs.open_input_file(self.path) as f:
                size = f.size()
                data = f.read()
            if len(data) != size:
                raise Suspect(f"read {len(data)} of the {size} bytes of {self.uri}")
            return data

        try:
            return read() if self.local else retry(read, what=f"read {self.uri}")
        except Exception as exc:
            raise self.error("read", exc) from None

    def read_json(self):
        return json.loads(self.read_bytes())

    # -------------------------------------------------------------- writing

    def write_bytes(self, data: bytes) -> None:
        """Write a whole object: readers see the old one or the new one, never half of one.
        Object stores publish an upload only when it completes; a local file is written
        beside its target and renamed over it (a file rename, atomic on POSIX)."""
        try:
            if self.local:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                tmp = f"{os.path.dirname(self.path)}/.{self.name}.tmp-{uuid.uuid4().hex[:12]}"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            else:
                def write() -> None:
                    with self.fs.open_output_stream(self.path) as f:
                        f.write(data)

                retry(write, what=f"write {self.uri}")
        except CoughError:
            raise
        except Exception as exc:
            raise self.error("write", exc) from None

    def write_json(self, obj) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def delete(self) -> None:
        """Remove this file or folder (and what is under it), if it exists."""
        kind = self.info().type
        try:
            if kind == pafs.FileType.Directory:
                self.fs.delete_dir(self.path)
            elif kind != pafs.FileType.NotFound:
                self.fs.delete_file(self.path)
        except Exception as exc:
            raise self.error("delete", exc) from None

    # -------------------------------------------------------------- relations

    def contains(self, other: "Location") -> bool:
        """Whether ``other`` is this location or lies under it (same store)."""
        if type(self.fs) is not type(other.fs) or self.scheme != other.scheme:
            return False
        mine, theirs = PurePosixPath(self.path), PurePosixPath(other.path)
        return mine == theirs or mine in theirs.parents


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def open_input(uri: str):
    """A stream of one file, for code that gets single file URIs (a recording, a labels CSV)."""
    return Location.of(uri).open_input()


#: A URI whose authority carries ``user@`` or ``user:password@`` (``s3://KEY:SECRET@bucket/...``;
#: a secret may hold a ``/``, a key never does).
CREDENTIALS = re.compile(r"^([a-zA-Z][\w+.-]*://)(?:[^/@]*@|[^/@:]*:[^@]*@)")


def redacted(uri: str) -> str:
    """``uri`` with the credentials of its authority replaced by ``***``.

    >>> redacted("s3://AKIA123:s3cr3t/+x@bucket/raw"), redacted("s3://bucket/a:b@c.wav")
    ('s3://***@bucket/raw', 's3://bucket/a:b@c.wav')
    """
    return CREDENTIALS.sub(r"\1***@", uri)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a single URI (what a listed entry is read through)."""
    loc = Location.of(uri)
    return loc.fs, loc.path


# ------------------------------------------------------------------------------ outputs

def _hidden_under(outer: Location, inner: Location) -> bool:
    """Whether ``inner`` lies in a ``_``/``.`` folder of ``outer``, which every reader of
    ``outer`` skips (recordings listing, Delta and Parquet readers)."""
    first = PurePosixPath(inner.path).relative_to(PurePosixPath(outer.path)).parts[:1]
    return bool(first) and first[0].startswith(("_", "."))


@dataclass
class Output:
    """A job's output location, checked before any work (:func:`claim`).

    ``state`` is ``absent``, ``empty`` or ``ours`` (a previous output of the same job,
    which this run replaces). :meth:`writing` writes the owner marker before the first
    byte of output and, when the run fails before its commit (``commit``, the object a
    run writes last, is not there), removes what it wrote into a location that held
    nothing before.
    """

    loc: Location
    kind: str
    state: str

    @contextlib.contextmanager
    def writing(self, commit: str, *, settle: Callable[[], bool] | None = None) -> Iterator[Location]:
        """Write the owner marker, then yield; on failure before ``commit`` exists, remove what
        this run wrote into a location that held nothing, the owner marker last. ``settle``:
        called first, it stops the run's tasks and says whether they all ended
        (:class:`cough.runtime.TaskGate`); when not, everything stays, marker included, so
        that what a straggling task writes later is still this job's to replace."""
        if self.state != "ours":
            self.loc.join(OWNER_FILE).write_json(owner_record(self.kind))
        try:
            yield self.loc
        except BaseException:
            settled = settle() if settle is not None else True
            if not settled:
                log.warning("%s keeps what this failed run wrote, with its owner marker: the next run of `cough %s` "
                            "there replaces it", self.loc.uri, self.kind)
            elif self.state != "ours" and not self.loc.join(commit).exists():
                with contextlib.suppress(Exception):
                    entries = sorted(self.loc.listdir(), key=lambda e: PurePosixPath(e.path).name == OWNER_FILE)
                    for entry in entries:  # the owner marker last: a failure on the way leaves it
                        self.loc.like(entry.path).delete()
                    if self.state == "absent":
                        self.loc.delete()
            raise


def owner_record(kind: str) -> dict:
    from .. import __version__
    from .schema import JSON_SCHEMA_VERSION

    return {"kind": kind, "schema_version": JSON_SCHEMA_VERSION, "cough_version": __version__,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}


def claim(out: "str | Location", kind: str, *, flag: str = "--out", inputs: dict | None = None,
          extends: bool = False) -> Output:
    """Check that ``out`` may receive ``kind``'s output: it is absent, an empty folder, or a
    previous output of the same job (its owner marker names ``kind``). Anything else, and an
    ``out`` that is, holds or lies inside one of ``inputs`` (``{"SOURCE": location, ...}``)
    except in a ``_``/``.`` folder its readers skip, is a :class:`UsageError` (exit 2) that
    names what is there. ``extends``: the job adds to its earlier output (PRED) instead of
    replacing it.
    """
    loc = Location.of(out)
    for name, given in (inputs or {}).items():
        if given is None:
            continue
        other = Location.of(given)
        if loc.contains(other):
            raise UsageError(f"{flag} {loc.uri} {'is' if loc.uri == other.uri else 'contains'} {name} "
                             f"{other.uri}: writing there would destroy the input; choose another {flag}")
        if other.contains(loc) and not _hidden_under(other, loc):
            raise UsageError(f"{flag} {loc.uri} lies inside {name} {other.uri}: choose a location outside it")
    info = loc.info()
    if info.type == pafs.FileType.NotFound:
        _check_bucket(loc, flag)
        return Output(loc, kind, "absent")
    if info.type != pafs.FileType.Directory:
        raise UsageError(f"{flag} {loc.uri} is a file, not a folder: choose another {flag} (the file is left as it is)")
    entries = loc.listdir()
    if not entries:
        return Output(loc, kind, "empty")
    names = sorted(PurePosixPath(e.path).name for e in entries)
    owner = read_owner(loc) if OWNER_FILE in names else None
    if owner and owner.get("kind") == kind:
        from .schema import check_schema_version

        try:
            check_schema_version(owner, f"{flag} {loc.uri}")
        except CoughError as exc:  # a newer cough's output: not this one's to replace
            raise UsageError(f"{exc}; or choose another {flag}") from None
        log.info("%s %s holds an earlier `cough %s` output: this run %s when it commits", flag, loc.uri, kind,
                 "adds to it" if extends else "replaces it")
        return Output(loc, kind, "ours")
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")
    what = (f"the output of `cough {owner['kind']}`" if owner and owner.get("kind")
            else f"files that `cough {kind}` did not write ({shown})")
    raise UsageError(f"{flag} {loc.uri} holds {what}; cough writes only into a new or empty folder or its own "
                     f"earlier {kind} output: choose another {flag}, or empty that folder yourself")


def read_owner(loc: Location) -> dict | None:
    """The owner marker (:data:`OWNER_FILE`) of folder ``loc``: which cough job wrote it, or
    None when there is none or it cannot be read."""
    try:
        owner = loc.join(OWNER_FILE).read_json()
    except (CoughError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _check_bucket(loc: Location, flag: str) -> None:
    """On an object store, the bucket of a new output must exist (cough never creates buckets)."""
    if loc.local:
        return
    bucket = loc.path.split("/", 1)[0]
    if loc.like(bucket).info().type == pafs.FileType.NotFound:
        raise CoughError(f"{flag} {loc.uri}: bucket {bucket} does not exist (or these credentials cannot see it)")


def remove_stale(loc: Location, keep: set[str], *, prefix: str = "") -> None:
    """After a commit: delete the entries of folder ``loc`` whose names start with ``prefix``
    and are not in ``keep`` (earlier versions that the commit replaced)."""
    for entry in loc.listdir():
        name = PurePosixPath(entry.path).name
        if name.startswith(prefix) and name not in keep:
            loc.like(entry.path).delete()


def new_version() -> str:
    """Sortable and unique: ``20260101T020000Z-1a2b3c``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
