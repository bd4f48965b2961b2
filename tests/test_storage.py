"""unlearnops.storage on plain paths, file:// URIs and a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from unlearnops import storage
from unlearnops.settings import get_settings
from unlearnops.storage import StorageError

BACKENDS = ["path", "file", pytest.param("s3", marks=pytest.mark.services)]


@pytest.fixture(params=BACKENDS)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty storage root URI of each kind."""
    if request.param == "path":
        return str(tmp_path / "root")
    if request.param == "file":
        return f"file://{tmp_path / 'root'}"
    return storage.join(request.getfixturevalue("s3_env"), "root")


def _make_tree(base: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"a": 1}\n',
        "model.safetensors": os.urandom(70_000),
        "tokenizer/vocab.txt": "caf\u00e9\nna\u00efve\n".encode(),
        "deep/er/still/x.bin": b"\x00" * 10,
    }
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return files


# ----------------------------------------------------------------- round trips
def test_bytes_text_json_round_trip(root: str) -> None:
    blob = os.urandom(3000)
    storage.write_bytes(storage.join(root, "a/b.bin"), blob)
    assert storage.read_bytes(storage.join(root, "a/b.bin")) == blob
    storage.write_text(storage.join(root, "t.txt"), "h\u00e9llo \u2603")
    assert storage.read_text(storage.join(root, "t.txt")) == "h\u00e9llo \u2603"
    obj = {"x": [1, 2, {"y": None}], "z": "\u00fc"}
    storage.write_json(storage.join(root, "j/doc.json"), obj)
    assert storage.read_json(storage.join(root, "j/doc.json")) == obj
    assert storage.exists(storage.join(root, "j/doc.json"))
    assert storage.exists(storage.join(root, "j"))  # a folder / prefix holding files
    assert storage.exists(storage.join(root, "j") + "/")
    assert not storage.exists(storage.join(root, "j/nope.json"))
    assert not storage.exists(storage.join(root, "jj"))
    # Overwrite replaces the content.
    storage.write_bytes(storage.join(root, "a/b.bin"), b"new")
    assert storage.read_bytes(storage.join(root, "a/b.bin")) == b"new"
    assert storage.sha256_of(storage.join(root, "a/b.bin")) == hashlib.sha256(b"new").hexdigest()


def test_iter_lines(root: str) -> None:
    uri = storage.join(root, "lines.jsonl")
    storage.write_text(uri, 'one\n\n{"k": "\u00e9"}\r\nlast-without-newline')
    assert list(storage.iter_lines(uri)) == ["one", "", '{"k": "\u00e9"}', "last-without-newline"]
    storage.write_text(uri, "a\nb\n")
    assert list(storage.iter_lines(uri)) == ["a", "b"]


def test_iter_lines_across_chunks(root: str) -> None:
    """Lines longer than the 1 MiB read chunk, with multi-byte characters, come back whole."""
    lines = ["\u00e9" * 700_000, "x" * 10, "\u2603" * 400_000]
    uri = storage.join(root, "big.txt")
    storage.write_text(uri, "\n".join(lines) + "\n")
    assert list(storage.iter_lines(uri)) == lines


def test_invalid_json_names_uri(root: str) -> None:
    uri = storage.join(root, "bad.json")
    storage.write_text(uri, '{"a": 1,\n oops}')
    with pytest.raises(StorageError, match=r"bad\.json: invalid JSON at line 2"):
        storage.read_json(uri)


def test_list_files_sorted_filtered(root: str) -> None:
    for rel in ["b.jsonl", "a.jsonl", "sub/c.parquet", "sub/d.txt"]:
        storage.write_text(storage.join(root, "data", rel), rel)
    storage.write_text(storage.join(root, "database.jsonl"), "sibling prefix, not under data/")
    infos = storage.list_files(storage.join(root, "data"))
    names = [i.uri.rsplit("data/", 1)[1] for i in infos]
    assert names == ["a.jsonl", "b.jsonl", "sub/c.parquet", "sub/d.txt"]
    assert [i.size for i in infos] == [len(n) for n in names]
    assert all(i.etag for i in infos)
    shards = storage.list_files(storage.join(root, "data"), suffixes=(".jsonl", ".parquet"))
    assert [i.uri.rsplit("/", 1)[1] for i in shards] == ["a.jsonl", "b.jsonl", "c.parquet"]
    assert storage.list_files(storage.join(root, "missing")) == []
    # Every listed URI reads back.
    assert storage.read_text(infos[0].uri) == "a.jsonl"


def test_upload_download_file(root: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(50_000))
    uri = storage.join(root, "f/src.bin")
    storage.upload_file(src, uri)
    out = tmp_path / "out" / "copy.bin"
    storage.download_file(uri, out)
    assert out.read_bytes() == src.read_bytes()
    assert storage.sha256_of(uri) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert [p.name for p in out.parent.iterdir()] == ["copy.bin"]


def test_upload_download_dir(root: str, tmp_path: Path) -> None:
    src = tmp_path / "model"
    files = _make_tree(src)
    uri = storage.join(root, "models/m1")
    storage.upload_dir(src, uri)
    listed = storage.list_files(uri)
    assert len(listed) == len(files)
    assert not any(storage.TMP_MARK in i.uri for i in listed)
    dest = storage.download_dir(uri, tmp_path / "back")
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    # Uploading again replaces the folder: files missing from the new version disappear.
    shutil.rmtree(src / "deep")
    (src / "config.json").write_bytes(b"{}")
    storage.upload_dir(src, uri)
    assert len(storage.list_files(uri)) == len(files) - 1
    dest = storage.download_dir(uri, tmp_path / "back")
    assert not (dest / "deep").exists()
    assert (dest / "config.json").read_bytes() == b"{}"
    with storage.local_dir(uri) as local:
        assert (local / "tokenizer/vocab.txt").read_bytes() == files["tokenizer/vocab.txt"]
    # Nothing temporary is left next to the folder.
    parent = storage.join(root, "models")
    if storage.is_s3(root):
        bucket, key = storage.split_s3(parent)
        keys = [o["Key"] for o in storage.s3_client().list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert not [k for k in keys if storage.TMP_MARK in k]
    else:
        assert [p.name for p in storage.local_path(parent).iterdir()] == ["m1"]


def test_delete_prefix(root: str) -> None:
    for rel in ["x/1.txt", "x/sub/2.txt", "xy/3.txt", "x.txt"]:
        storage.write_text(storage.join(root, rel), rel)
    storage.delete_prefix(storage.join(root, "x"))
    remaining = sorted(i.uri.rsplit("/", 2)[-2] + "/" + i.uri.rsplit("/", 1)[1]
                       for i in storage.list_files(root))
    assert remaining == ["root/x.txt", "xy/3.txt"]
    storage.delete_prefix(storage.join(root, "x.txt"))
    assert not storage.exists(storage.join(root, "x.txt"))
    storage.delete_prefix(storage.join(root, "never-there"))  # no error when absent


def test_missing_file_names_uri(root: str, tmp_path: Path) -> None:
    uri = storage.join(root, "no/such.json")
    for call in (storage.read_bytes, storage.read_text, storage.sha256_of,
                 lambda u: list(storage.iter_lines(u))):
        with pytest.raises(StorageError) as info:
            call(uri)
        assert "no/such.json" in str(info.value)
        assert "no such" in str(info.value)
    with pytest.raises(StorageError, match="no/such.json"):
        storage.download_file(uri, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(StorageError, match="no-folder"):
        storage.download_dir(storage.join(root, "no-folder"), tmp_path / "d")


# ----------------------------------------------------------------- atomicity (local)
def test_failed_local_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "doc.json"

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        storage.write_json(str(target), {"a": 1})
    assert list(target.parent.iterdir()) == []
    # An existing file keeps its old content when the new write fails.
    monkeypatch.undo()
    storage.write_text(str(target), "old")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        storage.write_text(str(target), "new")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["doc.json"]


def test_failed_local_dir_upload_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "model"
    _make_tree(src)
    dest = tmp_path / "store" / "m"
    real_copyfile = shutil.copyfile
    calls = {"n": 0}

    def flaky(a: Any, b: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("crash mid-way")
        return real_copyfile(a, b, **kw)

    monkeypatch.setattr(shutil, "copyfile", flaky)
    with pytest.raises(OSError, match="crash mid-way"):
        storage.upload_dir(src, str(dest))
    assert list((tmp_path / "store").iterdir()) == []


def test_failed_local_upload_file_keeps_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"new content")
    dest = tmp_path / "store" / "a.bin"
    storage.write_bytes(str(dest), b"old")

    def broken(a: Any, b: Any, **kw: Any) -> Any:
        Path(b).write_bytes(b"half")
        raise OSError("crash")

    monkeypatch.setattr(shutil, "copyfile", broken)
    with pytest.raises(OSError):
        storage.upload_file(src, str(dest))
    assert dest.read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == ["a.bin"]


def test_uri_helpers() -> None:
    assert storage.split_s3("s3://b/k/x.json") == ("b", "k/x.json")
    assert storage.join("s3://b/p/", "x", "/y/") == "s3://b/p/x/y"
    assert storage.local_path("file:///tmp/a b") == Path("/tmp/a b")
    with pytest.raises(StorageError, match="unsupported scheme"):
        storage.local_path("gs://bucket/x")
    with pytest.raises(StorageError, match="not an s3://bucket/key URI"):
        storage.split_s3("s3:///nobucket")


# ----------------------------------------------------------------- S3 specifics
@pytest.mark.services
def test_s3_list_paginates(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """list_files follows continuation tokens (small pages force several requests)."""
    prefix = storage.join(s3_env, "many")
    client = storage.s3_client()
    for i in range(23):
        client.put_object(Bucket=storage.split_s3(s3_env)[0], Key=f"many/k{i:03d}.jsonl", Body=b"x")
    pages_seen = {"n": 0}
    real_get_paginator = client.get_paginator

    class SmallPages:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def paginate(self, **kwargs: Any) -> Any:
            for page in self.inner.paginate(**kwargs, PaginationConfig={"PageSize": 5}):
                pages_seen["n"] += 1
                yield page

    monkeypatch.setattr(client, "get_paginator", lambda name: SmallPages(real_get_paginator(name)))
    infos = storage.list_files(prefix)
    assert [i.uri for i in infos] == [f"{prefix}/k{i:03d}.jsonl" for i in range(23)]
    assert pages_seen["n"] == 5
    storage.delete_prefix(prefix)
    monkeypatch.undo()
    assert storage.list_files(prefix) == []


@pytest.mark.services
def test_s3_multipart_upload(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARNOPS_S3__MULTIPART_THRESHOLD_MB", "5")
    get_settings.cache_clear()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    uri = storage.join(s3_env, "big/big.bin")
    storage.upload_file(big, uri)
    [info] = storage.list_files(storage.join(s3_env, "big"))
    assert info.size == big.stat().st_size
    assert info.etag.endswith("-3"), f"expected a 3-part multipart ETag, got {info.etag}"
    out = tmp_path / "back.bin"
    storage.download_file(uri, out)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    assert storage.sha256_of(uri) == digest
    # A folder holding a large file goes through the same multipart path (and server-side copy).
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(big, folder / "weights.bin")
    storage.upload_dir(folder, storage.join(s3_env, "dir"))
    assert storage.sha256_of(storage.join(s3_env, "dir/weights.bin")) == digest


def _fail_on(client: Any, event: str, after: int) -> dict[str, int]:
    """Register a botocore hook failing the ``after``-th call of an operation (1-based)."""
    count = {"n": 0}

    def hook(**_: Any) -> None:
        from botocore.exceptions import EndpointConnectionError

        count["n"] += 1
        if count["n"] >= after:
            raise EndpointConnectionError(endpoint_url=f"injected failure in {event}")

    client.meta.events.register(f"before-call.s3.{event}", hook, unique_id=f"fail-{event}")
    return count


def _unhook(client: Any, event: str) -> None:
    client.meta.events.unregister(f"before-call.s3.{event}", unique_id=f"fail-{event}")


def _all_keys(bucket_uri: str) -> list[str]:
    bucket = storage.split_s3(bucket_uri)[0]
    pages = storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.services
def test_s3_failed_multipart_leaves_no_object(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNLEARNOPS_S3__MULTIPART_THRESHOLD_MB", "5")
    get_settings.cache_clear()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    client = storage.s3_client()
    _fail_on(client, "UploadPart", after=2)
    try:
        with pytest.raises(StorageError, match="injected failure"):
            storage.upload_file(big, storage.join(s3_env, "big.bin"))
    finally:
        _unhook(client, "UploadPart")
    assert not storage.exists(storage.join(s3_env, "big.bin"))
    bucket = storage.split_s3(s3_env)[0]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.services
@pytest.mark.parametrize("phase", ["PutObject", "CopyObject"])
def test_s3_failed_dir_upload_leaves_nothing(s3_env: str, tmp_path: Path, phase: str) -> None:
    """A folder upload failing mid-way (upload or server-side copy) leaves no object behind."""
    src = tmp_path / "model"
    _make_tree(src)
    client = storage.s3_client()
    _fail_on(client, phase, after=3)
    try:
        with pytest.raises(StorageError, match="models/m"):
            storage.upload_dir(src, storage.join(s3_env, "models/m"))
    finally:
        _unhook(client, phase)
    assert _all_keys(s3_env) == []
    assert storage.list_files(storage.join(s3_env, "models/m")) == []


@pytest.mark.services
def test_s3_missing_bucket(s3_env: str, tmp_path: Path) -> None:
    uri = "s3://no-such-bucket-unlearnops/data/x.json"
    for call in (storage.read_bytes, lambda u: list(storage.iter_lines(u)),
                 lambda u: storage.list_files("s3://no-such-bucket-unlearnops/data"),
                 lambda u: storage.write_text(u, "x")):
        with pytest.raises(StorageError) as info:
            call(uri)
        assert "s3://no-such-bucket-unlearnops/data" in str(info.value)
        assert "bucket does not exist" in str(info.value)
    src = tmp_path / "f.txt"
    src.write_text("x")
    with pytest.raises(StorageError, match="no-such-bucket-unlearnops"):
        storage.upload_file(src, uri)


@pytest.mark.services
def test_s3_missing_key(s3_env: str, tmp_path: Path) -> None:
    uri = storage.join(s3_env, "absent/key.json")
    for call in (storage.read_json, storage.sha256_of, lambda u: storage.download_file(u, tmp_path / "x")):
        with pytest.raises(StorageError, match=rf"{uri}: no such object"):
            call(uri)
    assert not storage.exists(uri)
    assert not (tmp_path / "x").exists()


@pytest.mark.services
@pytest.mark.parametrize(
    ("variable", "value", "hint"),
    [("UNLEARNOPS_S3__SECRET_ACCESS_KEY", "wrong-secret", "UNLEARNOPS_S3__SECRET_ACCESS_KEY"),
     ("UNLEARNOPS_S3__ACCESS_KEY_ID", "unknown-key", "UNLEARNOPS_S3__ACCESS_KEY_ID")],
)
def test_s3_wrong_credentials(
    s3_env: str, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, hint: str
) -> None:
    uri = storage.join(s3_env, "x.txt")
    storage.write_text(uri, "secret data")
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("UNLEARNOPS_S3__MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    for call in (storage.read_text, lambda u: storage.write_text(u, "y"),
                 lambda u: storage.list_files(s3_env)):
        with pytest.raises(StorageError) as info:
            call(uri)
        assert s3_env in str(info.value)
        assert hint in str(info.value)
    with pytest.raises(StorageError, match=rf"{uri}: .*credentials"):
        storage.exists(uri)


@pytest.mark.services
def test_s3_unreachable_endpoint(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.env import free_port

    monkeypatch.setenv("UNLEARNOPS_S3__ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("UNLEARNOPS_S3__MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    with pytest.raises(StorageError, match=r"cannot reach S3 .*UNLEARNOPS_S3__ENDPOINT_URL"):
        storage.read_bytes(storage.join(s3_env, "x"))


def test_download_refuses_keys_leaving_the_destination(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: an S3 key such as ``model/../../x`` was written outside the destination folder."""
    evil = [storage.FileInfo("s3://b/model/ok.txt", 1, "e"), storage.FileInfo("s3://b/model/../../x", 1, "e")]
    written: list[Path] = []
    monkeypatch.setattr(storage, "list_files", lambda uri: evil)
    monkeypatch.setattr(storage, "download_file", lambda uri, dest: written.append(Path(dest)))
    with pytest.raises(StorageError, match="leaves the destination"):
        storage.download_dir("s3://b/model", tmp_path / "dest")
    assert all(p.is_relative_to(tmp_path) for p in written) and not (tmp_path / "dest").exists()
    assert storage.inside(tmp_path, "a/b.txt") == (tmp_path / "a/b.txt").resolve()
    for bad in ("../x", "a/../../x", "/etc/passwd", "."):
        with pytest.raises(StorageError):
            storage.inside(tmp_path, bad)


@pytest.mark.services
def test_s3_folder_replace_never_deletes_first(s3_env: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a folder overwrite on S3 deleted the old folder before the new copy succeeded."""
    uri = storage.join(s3_env, "replace/m")
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "weights.bin").write_text(text)
        (folder / "manifest.json").write_text(f'"{text}"')
    (old / "stale.txt").write_text("x")
    storage.upload_dir(old, uri)
    client = storage.s3_client()
    real_copy = client.copy

    def failing_copy(*args, **kwargs):
        raise RuntimeError("network gone")

    monkeypatch.setattr(client, "copy", failing_copy)
    with pytest.raises(Exception, match="network gone"):
        storage.upload_dir(new, uri)
    assert storage.read_text(storage.join(uri, "manifest.json")) == '"old"'
    assert storage.read_text(storage.join(uri, "weights.bin")) == "old"
    monkeypatch.setattr(client, "copy", real_copy)
    storage.upload_dir(new, uri)
    assert storage.read_text(storage.join(uri, "manifest.json")) == '"new"'
    names = sorted(i.uri.rsplit("/", 1)[1] for i in storage.list_files(uri))
    assert names == ["manifest.json", "weights.bin"]


def test_one_backend_per_scheme_and_arrow_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every function dispatches on the URI to one Backend; pyarrow writers (Ray Train) get a folder
    (created locally) or an S3 filesystem built from the S3 settings."""
    assert storage.backend("s3://b/k") is storage.S3 and storage.backend(str(tmp_path)) is storage.LOCAL
    assert storage.backend("file:///x") is storage.LOCAL
    path, filesystem = storage.arrow_location(str(tmp_path / "ray"))
    assert (path, filesystem) == (str((tmp_path / "ray").absolute()), None) and (tmp_path / "ray").is_dir()
    monkeypatch.setenv("UNLEARNOPS_S3__ENDPOINT_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    try:
        path, filesystem = storage.arrow_location("s3://bucket/root/ray")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert path == "bucket/root/ray" and type(filesystem).__name__ == "S3FileSystem"
    storage.write_text(str(tmp_path / "f.txt"), "x")
    storage.delete_file(str(tmp_path / "f.txt"))
    storage.delete_file(str(tmp_path / "f.txt"))  # absent: no error
    assert not (tmp_path / "f.txt").exists()
