"""Locations on local disks and object stores, and how a job claims and commits its output
(what SOURCE holds: cough.tables.listing).

Every job resolves each location it is given once, into a :class:`Location` (a pyarrow
filesystem, the path on it and the absolute URI), and passes that object down, so that
``/data/x``, ``file:///data/x``, ``s3://bucket/x`` and ``gs://bucket/x`` go through one
code path. Nothing here renames a directory: object stores cannot (pyarrow's S3 and GCS
filesystems refuse or half-do it). Outputs commit by writing one small object last (see
:class:`Output` and docs/storage.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Iterator

import pyarrow.fs as pafs

from ..errors import CoughError, UsageError, errno_note, plain

log = logging.getLogger("cough.storage")

#: The object a job writes into its output before anything else: whose output this is
#: (cough 0.1's outputs had none).
OWNER_FILE = ".cough-output.json"


def _cause(exc: BaseException) -> str:
    """The first line of a storage error, and what its errno means (``ENOSPC: disk full``)."""
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip()
    first = plain(text.splitlines()[0])
    return first + errno_note(exc, first)


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
        try:
            fs, path = pafs.FileSystem.from_uri(where)
        except Exception as exc:
            raise UsageError(f"{where}: {scheme}:// is not a storage scheme cough can use ({_cause(exc)}); "
                             "use a local path, file://, s3:// or gs://") from None
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
        """One line naming this location and the cause (and missing AWS credentials, if so)."""
        hint = ""
        if self.scheme == "s3" and _no_aws_credentials():
            hint = " (no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        return CoughError(f"cannot {verb} {self.uri}: {_cause(exc)}{hint}")

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
        try:
            with self.open_input() as f:
                return f.read()
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
                with self.fs.open_output_stream(self.path) as f:
                    f.write(data)
        except CoughError:
            raise
        except Exception as exc:
            raise self.error("write", exc) from None

    def write_json(self, obj) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def delete(self) -> None:
        """Remove this file or folder (and what is under it), if it exists."""
        kind = self.info().type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif kind != pafs.FileType.NotFound:
            self.fs.delete_file(self.path)

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
