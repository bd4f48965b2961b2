"""One module for URIs: plain paths, ``file://`` and ``s3://`` (boto3), each scheme one :class:`Backend`.

Nothing outside this module calls S3: the functions here pick the backend by URI and dispatch.

Every write is atomic: a local file is written under a temporary name in the same folder and
renamed; an S3 object only appears when its (multipart) upload completes, and a folder upload
goes to a temporary prefix first and is copied server-side under its final prefix, so a crash
never leaves a half-written object or folder under its final name. Errors come out as
:class:`StorageError` naming the URI and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from .settings import S3Settings, get_settings

TMP_MARK = ".tmp-"


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what to do."""


@dataclass(frozen=True)
class FileInfo:
    """A stored file: its URI, size in bytes and version tag (S3 ETag or mtime-size locally)."""

    uri: str
    size: int
    etag: str


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    """A plain path or ``file://`` URI as a Path."""
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported scheme; use a path, file:// or s3://")
    return Path(uri)


def join(uri: str, *parts: str) -> str:
    """Append path parts to a URI (``s3://b/p`` + ``x`` → ``s3://b/p/x``)."""
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}" if part else out
    return out


# ---------------------------------------------------------------- S3 client
def s3_client(settings: S3Settings | None = None) -> Any:
    """A boto3 S3 client configured from settings (endpoint, region, credentials, retries)."""
    s3 = settings or get_settings().s3
    return _cached_client(
        s3.endpoint_url,
        s3.region,
        s3.access_key_id,
        s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
        s3.max_attempts,
    )


@lru_cache(maxsize=8)
def _cached_client(
    endpoint: str | None, region: str, key: str | None, secret: str | None, attempts: int
) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": attempts, "mode": "adaptive"},
        connect_timeout=10,
        read_timeout=120,
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=config,
    )


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    threshold = get_settings().s3.multipart_threshold_mb * 1024 * 1024
    return TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold)


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Turn botocore errors into :class:`StorageError` messages that name the URI."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        raise StorageError(_explain(uri, code, str(err))) from err
    except Boto3Error as err:  # S3UploadFailedError & co. wrap the ClientError as their context
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ClientError):
            code = str(cause.response.get("Error", {}).get("Code", ""))
            raise StorageError(_explain(uri, code, str(cause))) from err
        raise StorageError(f"{uri}: {err}") from err
    except BotoCoreError as err:
        raise StorageError(f"{uri}: cannot reach S3 ({err}); check UNLEARNOPS_S3__ENDPOINT_URL") from err


def _explain(uri: str, code: str, detail: str) -> str:
    hints = {
        "NoSuchBucket": "the bucket does not exist; create it or fix the URI",
        "NoSuchKey": "no such object",
        "404": "no such object",
        "NotFound": "no such object",
        "InvalidAccessKeyId": "S3 rejected the access key; check UNLEARNOPS_S3__ACCESS_KEY_ID",
        "SignatureDoesNotMatch": "S3 rejected the credentials; check UNLEARNOPS_S3__SECRET_ACCESS_KEY",
        "AccessDenied": "access denied; check the credentials and the bucket policy",
        "403": "access denied; check the S3 credentials",
    }
    return f"{uri}: {hints.get(code, detail)}"


# ---------------------------------------------------------------- backends
class Backend(Protocol):
    """One storage scheme's operations; :func:`backend` picks it by URI, the functions below dispatch.

    A new scheme is one class implementing this protocol and one line in :func:`backend`.
    """

    def exists(self, uri: str) -> bool: ...
    def read_bytes(self, uri: str) -> bytes: ...
    def iter_chunks(self, uri: str, size: int) -> Iterator[bytes]: ...
    def iter_lines(self, uri: str) -> Iterator[str]: ...
    def list_files(self, prefix: str) -> list[FileInfo]: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def upload_file(self, path: Path, uri: str) -> None: ...
    def download_to(self, uri: str, tmp: Path) -> None: ...
    def upload_dir(self, src: Path, files: list[Path], uri: str) -> None: ...
    def download_dir(self, uri: str, dest: Path) -> None: ...
    def delete_file(self, uri: str) -> None: ...
    def delete_prefix(self, uri: str) -> None: ...
    def local_dir(self, uri: str, cache: Path | None) -> contextlib.AbstractContextManager[Path]: ...
    def arrow_location(self, uri: str) -> tuple[str, Any]: ...


class LocalBackend:
    """Plain paths and ``file://`` URIs: every write goes to a temp name in the same folder, then a rename."""

    @staticmethod
    def _file(uri: str) -> Path:
        path = local_path(uri)
        if not path.is_file():
            raise StorageError(f"{uri}: no such file")
        return path

    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def read_bytes(self, uri: str) -> bytes:
        return self._file(uri).read_bytes()

    def iter_chunks(self, uri: str, size: int) -> Iterator[bytes]:
        with self._file(uri).open("rb") as handle:
            yield from iter(lambda: handle.read(size), b"")

    def iter_lines(self, uri: str) -> Iterator[str]:
        with self._file(uri).open("r", encoding="utf-8") as handle:
            for line in handle:
                yield line.rstrip("\n")

    def list_files(self, prefix: str) -> list[FileInfo]:
        out: list[FileInfo] = []
        root = local_path(prefix)
        if root.is_dir():
            for path in root.rglob("*"):
                if path.is_file():
                    stat = path.stat()
                    out.append(FileInfo(str(path), stat.st_size, f"{int(stat.st_mtime_ns)}-{stat.st_size}"))
        return out

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + TMP_MARK, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def upload_file(self, path: Path, uri: str) -> None:
        dest = local_path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + TMP_MARK + uuid.uuid4().hex[:8])
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def download_to(self, uri: str, tmp: Path) -> None:
        shutil.copyfile(self._file(uri), tmp)

    def upload_dir(self, src: Path, files: list[Path], uri: str) -> None:
        with local_folder_writer(local_path(uri)) as tmp:
            shutil.copytree(src, tmp)

    def download_dir(self, uri: str, dest: Path) -> None:
        src = local_path(uri)
        if not src.is_dir():
            raise StorageError(f"{uri}: no such folder")
        upload_dir(src, str(dest))

    def delete_file(self, uri: str) -> None:
        local_path(uri).unlink(missing_ok=True)

    def delete_prefix(self, uri: str) -> None:
        path = local_path(uri)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    @contextlib.contextmanager
    def local_dir(self, uri: str, cache: Path | None) -> Iterator[Path]:
        path = local_path(uri)
        if not path.is_dir():
            raise StorageError(f"{uri}: no such folder")
        yield path

    def arrow_location(self, uri: str) -> tuple[str, Any]:
        path = local_path(uri).absolute()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None


class S3Backend:
    """``s3://bucket/key`` through boto3 (the client of :func:`s3_client`, errors via :func:`_s3_errors`).

    An object appears only when its (multipart) upload completes; a folder goes to a temp prefix first.
    """

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        from botocore.exceptions import ClientError

        try:
            if key.rstrip("/"):
                s3_client().head_object(Bucket=bucket, Key=key.rstrip("/"))
                return True
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) not in {"404", "NoSuchKey", "NotFound"}:
                raise StorageError(_explain(uri, str(err.response["Error"].get("Code")), str(err))) from err
        prefix = key.rstrip("/") + "/" if key.rstrip("/") else ""
        with _s3_errors(uri):
            page = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("KeyCount") or page.get("Contents"))

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def iter_chunks(self, uri: str, size: int) -> Iterator[bytes]:
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
            try:
                yield from body.iter_chunks(size)
            finally:
                body.close()

    def iter_lines(self, uri: str) -> Iterator[str]:
        # Split on "\n" only (a "\r\n" cut by a chunk boundary must not make an extra line).
        pending = b""
        for chunk in self.iter_chunks(uri, 1 << 20):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                yield raw.rstrip(b"\r").decode("utf-8")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8")

    def list_files(self, prefix: str) -> list[FileInfo]:
        out: list[FileInfo] = []
        bucket, key = split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        with _s3_errors(prefix):
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            for page in pages:
                for obj in page.get("Contents", []):
                    out.append(FileInfo(f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["ETag"].strip('"')))
        return out

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)

    def upload_file(self, path: Path, uri: str) -> None:
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().upload_file(str(path), bucket, key, Config=_transfer_config())

    def download_to(self, uri: str, tmp: Path) -> None:
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().download_file(bucket, key, str(tmp), Config=_transfer_config())

    def upload_dir(self, src: Path, files: list[Path], uri: str) -> None:
        """Temp prefix, then copy-then-switch (see :func:`upload_dir`)."""
        bucket, key = split_s3(uri)
        key = key.rstrip("/")
        tmp_key = f"{key}{TMP_MARK}{uuid.uuid4().hex[:8]}"
        client = s3_client()
        with _s3_errors(uri):
            try:
                for file in files:
                    rel = file.relative_to(src).as_posix()
                    client.upload_file(str(file), bucket, f"{tmp_key}/{rel}", Config=_transfer_config())
                rels = sorted((f.relative_to(src).as_posix() for f in files),
                              key=lambda r: ("/" not in r and r.endswith(".json"), r))
                old = {split_s3(info.uri)[1] for info in list_files(uri)}
                copied: list[str] = []
                try:
                    for rel in rels:
                        client.copy({"Bucket": bucket, "Key": f"{tmp_key}/{rel}"}, bucket, f"{key}/{rel}",
                                    Config=_transfer_config())
                        copied.append(f"{key}/{rel}")
                except BaseException:
                    # roll back what this upload added; the old folder's keys are never deleted
                    with contextlib.suppress(Exception):
                        _delete_keys(client, bucket, sorted(set(copied) - old))
                    raise
                _delete_keys(client, bucket, sorted(old - {f"{key}/{rel}" for rel in rels}))
            finally:
                with contextlib.suppress(Exception):
                    delete_prefix(f"s3://{bucket}/{tmp_key}")

    def download_dir(self, uri: str, dest: Path) -> None:
        files = list_files(uri)
        if not files:
            raise StorageError(f"{uri}: no objects under this prefix")
        bucket, key = split_s3(uri)
        base = key.rstrip("/") + "/"
        with local_folder_writer(dest) as tmp:
            for info in files:
                download_file(info.uri, inside(tmp, split_s3(info.uri)[1][len(base):]))

    def delete_file(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        client = s3_client()
        with _s3_errors(uri):
            if key.rstrip("/"):  # a single object under exactly this name, as for a local file
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key.rstrip("/")}],
                                                             "Quiet": True})
            key = key.rstrip("/") + "/" if key.rstrip("/") else ""
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            for page in pages:
                objects = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if objects:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})

    @contextlib.contextmanager
    def local_dir(self, uri: str, cache: Path | None) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            yield download_dir(uri, Path(tmp) / "d")

    def arrow_location(self, uri: str) -> tuple[str, Any]:
        from pyarrow import fs

        s3 = get_settings().s3
        filesystem = fs.S3FileSystem(
            access_key=s3.access_key_id,
            secret_key=s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
            region=s3.region, endpoint_override=s3.endpoint_url,
            scheme="http" if (s3.endpoint_url or "").startswith("http://") else "https",
        )
        bucket, key = split_s3(uri)
        return f"{bucket}/{key}", filesystem


def _delete_keys(client: Any, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        objects = [{"Key": k} for k in keys[start:start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


LOCAL: Backend = LocalBackend()
S3: Backend = S3Backend()


def backend(uri: str) -> Backend:
    """The backend storing ``uri``: S3 for ``s3://``, else the local file system."""
    return S3 if is_s3(uri) else LOCAL


# ---------------------------------------------------------------- reads
def exists(uri: str) -> bool:
    """Whether a file or a folder (an S3 prefix holding objects) is stored under ``uri``."""
    return backend(uri).exists(uri)


def read_bytes(uri: str) -> bytes:
    return backend(uri).read_bytes(uri)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_text(uri))
    except json.JSONDecodeError as err:
        raise StorageError(f"{uri}: invalid JSON at line {err.lineno}: {err.msg}") from err


def iter_lines(uri: str) -> Iterator[str]:
    """Stream a text file line by line (bounded memory for S3 and local files alike)."""
    return backend(uri).iter_lines(uri)


def iter_chunks(uri: str, size: int = 1 << 20) -> Iterator[bytes]:
    """Stream a stored file's bytes in chunks of at most ``size`` bytes."""
    return backend(uri).iter_chunks(uri, size)


def list_files(prefix: str, suffixes: tuple[str, ...] = ()) -> list[FileInfo]:
    """Every file under a folder/prefix (recursive, sorted, S3 paginated); temp files skipped."""
    out = backend(prefix).list_files(prefix)
    keep = [f for f in out if TMP_MARK not in f.uri and (not suffixes or f.uri.endswith(suffixes))]
    return sorted(keep, key=lambda f: f.uri)


def sha256_of(uri: str) -> str:
    """SHA-256 hex digest of a stored file (streamed)."""
    digest = hashlib.sha256()
    for chunk in iter_chunks(uri):
        digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- writes
def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically (temp file + rename locally; a single PUT on S3)."""
    backend(uri).write_bytes(uri, data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def upload_file(path: str | Path, uri: str) -> None:
    """Copy a local file to a URI atomically (multipart on S3 above the threshold)."""
    backend(uri).upload_file(Path(path), uri)


def download_file(uri: str, path: str | Path) -> None:
    """Copy a stored file to a local path (atomic rename at the end)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + TMP_MARK + uuid.uuid4().hex[:8])
    try:
        backend(uri).download_to(uri, tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def local_folder_writer(dest: Path) -> Iterator[Path]:
    """Yield a sibling temp path to fill; on success it replaces ``dest`` by rename, on error it is removed.

    The folder appears under its final name only when complete (an existing one is swapped out).
    """
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + TMP_MARK + uuid.uuid4().hex[:8])
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(dest.name + TMP_MARK + "old-" + uuid.uuid4().hex[:8])
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a whole folder (e.g. a model directory) to a URI; the folder appears all at once.

    Locally: copy into a sibling temp folder, then rename over the destination. On S3 (no
    rename): upload under a temp prefix, then copy-then-switch — copy server-side over the final
    keys (top-level ``*.json`` documents last, so a reader that finds a manifest finds the files
    it names), and only once every copy succeeded delete the old keys the new folder lacks. A
    failed upload or copy deletes nothing of the old folder.
    """
    src = Path(local_dir)
    if not src.is_dir():
        raise StorageError(f"{src}: not a folder")
    backend(uri).upload_dir(src, sorted(p for p in src.rglob("*") if p.is_file()), uri)


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy a stored folder to a local folder (created; replaced atomically if present)."""
    dest = Path(local_dir)
    backend(uri).download_dir(uri, dest)
    return dest


def inside(root: Path, rel: str) -> Path:
    """``root / rel`` resolved; a key that leaves ``root`` (``model/../../x``, ``/etc/x``) is refused."""
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()) or target == root.resolve():
        raise StorageError(f"{rel!r}: the key leaves the destination folder; refused")
    return target


def delete_file(uri: str) -> None:
    """Remove one file/object (no error if absent)."""
    backend(uri).delete_file(uri)


def delete_prefix(uri: str) -> None:
    """Remove a folder/prefix and everything under it (no error if absent)."""
    backend(uri).delete_prefix(uri)


def local_dir(uri: str, cache: Path | None = None) -> contextlib.AbstractContextManager[Path]:
    """A local folder holding the stored folder's files (the folder itself when local)."""
    return backend(uri).local_dir(uri, cache)


def arrow_location(uri: str) -> tuple[str, Any]:
    """(path, pyarrow filesystem or None) of a folder for pyarrow writers (Ray Train's checkpoints);
    a local folder is created."""
    return backend(uri).arrow_location(uri)
