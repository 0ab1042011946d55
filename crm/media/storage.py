"""Where media files live: one interface, local files (default) or S3-compatible storage.

Keys are opaque paths (``w<workspace>/<yyyy>/<mm>/<random>.<ext>``); no key ever comes from a
file name or a URL, so nothing can escape the media folder or the bucket prefix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from flask import Flask, current_app, redirect, send_file
from werkzeug.wrappers import Response


class MediaStorage(Protocol):
    name: str

    def save(self, key: str, source: IO[bytes], content_type: str) -> None: ...

    def fetch(self, key: str, dest: Path) -> None:
        """Copy the stored file to a local path (for processing)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file; a missing one is not an error."""
        ...

    def exists(self, key: str) -> bool: ...

    def stored_keys(self) -> Iterator[tuple[str, datetime]]:
        """Every stored key with its last modification time (for the orphan sweep)."""
        ...

    def serve(self, key: str, content_type: str, download_name: str | None, as_attachment: bool) -> Response:
        """The response that gives the file to a browser that was already checked for access."""
        ...


class LocalStorage:
    name = "local"

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError("media key outside the media folder")
        return path

    def save(self, key: str, source: IO[bytes], content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, 1024 * 1024)
            os.replace(tmp, path)  # whole or nothing: a reader never sees half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def fetch(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stored_keys(self) -> Iterator[tuple[str, datetime]]:
        if not self.root.is_dir():
            return
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith(".part-"):
                mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                yield path.relative_to(self.root).as_posix(), mtime

    def serve(self, key: str, content_type: str, download_name: str | None, as_attachment: bool) -> Response:
        return send_file(
            self._path(key),
            mimetype=content_type,
            as_attachment=as_attachment,
            download_name=download_name,
            conditional=True,  # Range requests: audio and video players seek
            max_age=0,
        )


class S3Storage:
    """S3 or any S3-compatible service (MinIO, R2, ...), through boto3. Browsers get the file from a
    short-lived presigned URL, handed out only after the app checked the workspace."""

    name = "s3"
    URL_SECONDS = 300

    def __init__(self, bucket: str, prefix: str = "", **client_options: Any):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        options = {k: v for k, v in client_options.items() if v}
        # SigV4 everywhere (presigned URLs too); path-style addressing for S3-compatible servers
        # (MinIO and the like) named by an endpoint URL.
        style = "path" if options.get("endpoint_url") else "auto"
        config = Config(signature_version="s3v4", s3={"addressing_style": style})
        self.client = boto3.client("s3", config=config, **options)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def save(self, key: str, source: IO[bytes], content_type: str) -> None:
        self.client.upload_fileobj(
            source, self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}
        )

    def fetch(self, key: str, dest: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(dest))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError:
            return False
        return True

    def stored_keys(self) -> Iterator[tuple[str, datetime]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :], item["LastModified"]

    def serve(self, key: str, content_type: str, download_name: str | None, as_attachment: bool) -> Response:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentType": content_type,
        }
        if as_attachment:
            params["ResponseContentDisposition"] = content_disposition(download_name or "file")
        url = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.URL_SECONDS)
        response = redirect(url, code=302)
        response.headers["Cache-Control"] = "no-store"
        return response


def content_disposition(filename: str) -> str:
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def build_storage(app: Flask) -> MediaStorage:
    cfg = app.config
    if cfg["MEDIA_STORAGE"] == "s3":
        if not cfg.get("S3_BUCKET"):
            raise RuntimeError("MEDIA_STORAGE=s3 needs S3_BUCKET")
        return S3Storage(
            cfg["S3_BUCKET"],
            cfg.get("S3_PREFIX") or "",
            endpoint_url=cfg.get("S3_ENDPOINT_URL"),
            region_name=cfg.get("S3_REGION"),
            aws_access_key_id=cfg.get("S3_ACCESS_KEY_ID"),
            aws_secret_access_key=cfg.get("S3_SECRET_ACCESS_KEY"),
        )
    if cfg["MEDIA_STORAGE"] != "local":
        raise RuntimeError(f"MEDIA_STORAGE must be local or s3, not {cfg['MEDIA_STORAGE']!r}")
    return LocalStorage(Path(cfg.get("MEDIA_ROOT") or Path(cfg["INSTANCE_PATH"]) / "media"))


def setup_storage(app: Flask) -> None:
    """Built once at startup: boto3 makes clients safely from one thread, not from many at once."""
    app.extensions["media_storage"] = build_storage(app)


def media_origin(app: Flask) -> str | None:
    """Where browsers fetch media from when it is not this app (S3's presigned URLs), for the CSP."""
    if app.config.get("MEDIA_STORAGE") != "s3":
        return None
    cached = app.extensions.get("media_origin")
    if cached is None:
        from urllib.parse import urlsplit

        storage = app.extensions["media_storage"]
        assert isinstance(storage, S3Storage)
        url = storage.client.generate_presigned_url(
            "get_object", Params={"Bucket": storage.bucket, "Key": "probe"}, ExpiresIn=60
        )  # computed locally: no request is made
        parts = urlsplit(url)
        cached = app.extensions["media_origin"] = f"{parts.scheme}://{parts.netloc}"
    return str(cached)


def get_storage() -> MediaStorage:
    """The app's storage (built at startup, see ``setup_storage``)."""
    storage: MediaStorage = current_app.extensions["media_storage"]
    return storage
