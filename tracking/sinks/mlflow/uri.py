"""MLflow tracking URIs: which store a URI means here, where its artifacts go, and how to show it.

Pure functions, run wherever they are called (the MLflow sink calls `resolve_tracking_uri` on the
caller's thread when it is built); nothing here imports MLflow, creates folders or warns.

What each kind of URI becomes (`resolve_tracking_uri`):

- no URI: ``$MLFLOW_TRACKING_URI`` if set, else the embedded default
  ``sqlite:///<abs path of ./artifacts/mlruns/mlflow.db>``: one file, no server, in the folder the
  BatteryML docs use for MLflow (``file:./artifacts/mlruns``), made absolute at resolve time so that
  a helper process or a later ``chdir`` cannot move it.
- ``sqlite:///path.db``: that database, its path made absolute. New experiments keep their artifacts
  in ``<folder of the db>/artifacts`` (MLflow's own default is ``./mlruns`` under whatever the
  current directory is, which scatters artifacts).
- ``file:./mlruns``, ``file:///abs/mlruns`` or a plain path: MLflow's file store. It is broken twice
  in MLflow 3.x: it refuses to start unless ``MLFLOW_ALLOW_FILE_STORE=true``, and (3.17) it cannot
  find any run whose path has a folder named ``artifacts`` in it (``FileStore._is_valid_run_directory``
  skips such runs, so ``Run '…' not found`` follows right after ``create_run``). So:
  a path with an ``artifacts`` folder (``file:./artifacts/mlruns``, as our docs show it) becomes
  ``sqlite:///<that folder>/mlflow.db``, in the same place, with a `note` that says so and the
  ``mlflow ui`` command that shows the runs; any other path stays a real file store, opened with
  ``MLFLOW_ALLOW_FILE_STORE=true`` in the process that opens it (`ResolvedUri.env`).
- ``http(s)://host:port``: a tracking server, as given (without a trailing ``/``).
- anything else (``postgresql://``, ``databricks``, …): handed to MLflow unchanged.

Credentials (``http://user:secret@host``, ``?token=…``) stay in `ResolvedUri.uri`, which only the
MLflow client sees; everything meant for people (`redacted`, `note`, `ui_command`, `repr`) has
them replaced by ``***``. `redact_text` does the same for error messages that quote the URI.
"""
from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ...core.redact import MASK

__all__ = [
    "ResolvedUri",
    "resolve_tracking_uri",
    "redact_uri",
    "redact_text",
    "DEFAULT_STORE_DIR",
    "DB_FILE",
    "ARTIFACTS_DIR",
]

_logger = logging.getLogger(__name__)

#: where the embedded default store lives, relative to the current directory at resolve time
DEFAULT_STORE_DIR = os.path.join("artifacts", "mlruns")
#: the database file of a sqlite store made from a folder (default store, file: fallback)
DB_FILE = "mlflow.db"
#: the artifacts folder next to a sqlite database
ARTIFACTS_DIR = "artifacts"

#: the folder name MLflow 3.17's file store cannot have anywhere in a run's path
_FILE_STORE_BAD_PART = "artifacts"
#: query parameters whose values are secrets
_SECRET_QUERY_KEYS = ("token", "password", "passwd", "pwd", "secret", "key", "auth", "credential", "signature")


@dataclass(frozen=True)
class ResolvedUri:
    """A tracking URI as the MLflow sink uses it. `repr` shows the redacted form only."""

    #: the URI to hand to `MlflowClient`; may hold credentials: never log or return it
    uri: str = field(repr=False)
    #: the same URI with credentials replaced by ``***``: for logs, messages and meta.json
    redacted: str
    #: "sqlite", "file", "http" or "other"
    kind: str
    #: something the user should be told once (the file: → sqlite mapping), else None
    note: str | None = None
    #: a shell command that shows these runs in the MLflow UI, else None (a server has its own UI)
    ui_command: str | None = None
    #: where new experiments keep their artifacts (a file: URI), or None to leave it to MLflow
    artifact_location: str | None = None
    #: environment variables the process that opens this store needs
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        """True for stores that MLflow runs in the logging process itself (sqlite, file)."""
        return self.kind in ("sqlite", "file")

    def __repr__(self) -> str:
        return f"ResolvedUri({self.redacted!r}, kind={self.kind!r})"


def resolve_tracking_uri(uri: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None) -> ResolvedUri:
    """What `uri` means as a tracking store (see the module docstring); `cwd` anchors relative paths."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    if uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return _sqlite_store(base / DEFAULT_STORE_DIR / DB_FILE)
    if isinstance(uri, os.PathLike):
        return _file_store(base / os.fspath(uri))
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(
            f"tracking_uri must be a non-empty str or path, got {uri!r}; e.g. 'sqlite:///mlflow.db', "
            "'http://host:5000' or 'file:./mlruns' (None picks $MLFLOW_TRACKING_URI or "
            f"sqlite:///{DEFAULT_STORE_DIR}/{DB_FILE})"
        )
    uri = uri.strip()
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        return _sqlite_uri(uri, base)
    if scheme == "file":
        return _file_store(base / _file_uri_path(uri))
    if scheme in ("http", "https"):
        redacted = redact_uri(uri).rstrip("/")
        return ResolvedUri(uri=uri.rstrip("/"), redacted=redacted, kind="http")
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a plain path (or a Windows drive)
        return _file_store(base / uri)
    return ResolvedUri(uri=uri, redacted=redact_uri(uri), kind="other")


def _sqlite_uri(uri: str, base: Path) -> ResolvedUri:
    rest = uri[len("sqlite:"):]
    if not rest.startswith("///"):
        # sqlite:// (in memory) or sqlite://host/...: nothing on disk to anchor; MLflow decides
        return ResolvedUri(uri=uri, redacted=redact_uri(uri), kind="other")
    path, sep, query = rest[3:].partition("?")
    if not path or path == ":memory:":
        return ResolvedUri(uri=uri, redacted=redact_uri(uri), kind="other")
    return _sqlite_store(base / unquote(path), query=sep + query)


def _sqlite_store(db_path: Path, query: str = "", note: str | None = None) -> ResolvedUri:
    db_path = Path(os.path.abspath(db_path))
    uri = f"sqlite:///{db_path.as_posix()}{query}"
    redacted = redact_uri(uri)
    return ResolvedUri(
        uri=uri,
        redacted=redacted,
        kind="sqlite",
        note=note,
        ui_command=f"mlflow ui --backend-store-uri {shlex.quote(redacted)}",
        artifact_location=(db_path.parent / ARTIFACTS_DIR).as_uri(),
    )


def _file_uri_path(uri: str) -> str:
    """The local path of a file: URI: file:./rel, file:rel, file:/abs, file:///abs, file://localhost/abs."""
    rest = uri[len("file:"):]
    if rest.startswith("//"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"tracking_uri {redact_uri(uri)!r} names a remote host ({parts.netloc!r}); a file: store "
                "must be local: use file:///abs/path, file:./relative/path, or an http:// server"
            )
        return unquote(parts.path)
    return unquote(rest)


def _file_store(root: Path) -> ResolvedUri:
    root = Path(os.path.abspath(root))
    if _FILE_STORE_BAD_PART in root.parts:
        return _file_store_fallback(root)
    uri = root.as_uri()
    return ResolvedUri(
        uri=uri,
        redacted=uri,
        kind="file",
        ui_command=f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {shlex.quote(uri)}",
        env={"MLFLOW_ALLOW_FILE_STORE": "true"},
    )


def _file_store_fallback(root: Path) -> ResolvedUri:
    db = root / DB_FILE
    sqlite = _sqlite_store(db)
    note = (
        f"MLflow tracking URI {root.as_uri()!r} is logged to {sqlite.redacted!r} instead (same folder). "
        f"MLflow 3.x's file store cannot be used there: it refuses to start unless "
        f"MLFLOW_ALLOW_FILE_STORE=true, and it loses every run whose path has a folder named "
        f"{_FILE_STORE_BAD_PART!r} in it ('Run ... not found' right after creating it). "
        f"See these runs with: {sqlite.ui_command}"
    )
    return ResolvedUri(
        uri=sqlite.uri,
        redacted=sqlite.redacted,
        kind="sqlite",
        note=note,
        ui_command=sqlite.ui_command,
        artifact_location=sqlite.artifact_location,
    )


def redact_uri(uri: str) -> str:
    """`uri` with its password (or lone user token) and secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        # A user name alone is often a token (https://TOKEN@host): mask it too.
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret_key(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _is_secret_key(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_secret_key(name: str) -> bool:
    name = name.lower()
    return any(word in name for word in _SECRET_QUERY_KEYS)


def _secrets(uri: str) -> list[str]:
    """The secret substrings of `uri`, longest first (raw and percent-decoded forms)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return [uri]
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, colon, password = userinfo.partition(":")
        found += [password] if colon else [user]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if _is_secret_key(key):
            found.append(value)
    found += [unquote(s) for s in found] + [quote(s, safe="") for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact_text(text: str, uri: str | None) -> str:
    """`text` (e.g. an error message that quotes a request URL) with the secrets of `uri` masked."""
    if not uri:
        return text
    for secret in _secrets(uri):
        text = text.replace(secret, MASK)
    return text
