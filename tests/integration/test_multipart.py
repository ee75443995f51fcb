"""The concurrent multipart upload against moto's S3 server over HTTP: all or nothing at the key."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_sora.multipart import ConcurrentMultipartUpload
from airflow_sora.storage import conn_id_of, publish, s3_api_for
from tests.conftest import s3_client, s3_keys

MIB = 1024 * 1024


def api(bucket: str) -> Any:
    """The S3 caller the provider builds from the ``aws_default`` connection."""
    call = s3_api_for(ObjectStoragePath(f"s3://aws_default@{bucket}/"))
    assert call is not None
    return call


def chunks(data: bytes, size: int = 700_001) -> list[bytes]:
    """Odd-sized chunks, so parts never line up with writes."""
    return [data[i:i + size] for i in range(0, len(data), size)]


def open_uploads(s3_server: str, bucket: str) -> list[dict[str, Any]]:
    return list(s3_client(s3_server).list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(s3_server: str, bucket: str) -> list[str]:
    return list(s3_keys(s3_server, bucket))


def test_parts_in_flight_make_one_object_only_on_complete(s3_server: str, s3_bucket: str) -> None:
    data = os.urandom(17 * MIB + 12345)  # three full 5 MiB parts and a short last one
    upload = ConcurrentMultipartUpload(api(s3_bucket), f"{s3_bucket}/big.mp4", part_size=5 * MIB, concurrency=3)
    for chunk in chunks(data):
        upload.write(chunk)
    assert keys(s3_server, s3_bucket) == []  # nothing visible before commit
    upload.commit()
    body = s3_client(s3_server).get_object(Bucket=s3_bucket, Key="big.mp4")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert open_uploads(s3_server, s3_bucket) == []


def test_a_small_object_is_one_put(s3_server: str, s3_bucket: str) -> None:
    upload = ConcurrentMultipartUpload(api(s3_bucket), f"{s3_bucket}/small.json", part_size=5 * MIB)
    upload.write(b'{"ok": true}')
    upload.commit()
    assert s3_client(s3_server).get_object(Bucket=s3_bucket, Key="small.json")["Body"].read() == b'{"ok": true}'


def test_abort_leaves_no_object_and_no_open_upload(s3_server: str, s3_bucket: str) -> None:
    upload = ConcurrentMultipartUpload(api(s3_bucket), f"{s3_bucket}/gone.mp4", part_size=5 * MIB)
    for chunk in chunks(os.urandom(11 * MIB)):
        upload.write(chunk)
    assert len(open_uploads(s3_server, s3_bucket)) == 1
    upload.discard()
    assert keys(s3_server, s3_bucket) == [] and open_uploads(s3_server, s3_bucket) == []


def test_a_failed_part_fails_the_write_and_leaves_nothing(s3_server: str, s3_bucket: str) -> None:
    upload = ConcurrentMultipartUpload(api(s3_bucket), f"{s3_bucket}/broken.mp4", part_size=5 * MIB)
    upload.write(os.urandom(5 * MIB))  # the upload exists at the store now
    (open_upload,) = open_uploads(s3_server, s3_bucket)
    s3_client(s3_server).abort_multipart_upload(Bucket=s3_bucket, Key="broken.mp4", UploadId=open_upload["UploadId"])
    with pytest.raises(Exception, match=r"NoSuchUpload|does not exist"):
        for chunk in chunks(os.urandom(11 * MIB)):
            upload.write(chunk)
        upload.commit()
    assert keys(s3_server, s3_bucket) == []


def test_publish_to_s3_uses_concurrent_parts_and_discards_on_error(s3_server: str, s3_bucket: str) -> None:
    target = ObjectStoragePath(f"s3://aws_default@{s3_bucket}/clean/v.mp4")
    data = os.urandom(20 * MIB)
    with publish(target) as publication:
        for chunk in chunks(data):
            publication.write(chunk)
    assert target.read_bytes() == data
    with pytest.raises(RuntimeError), publish(ObjectStoragePath(f"s3://aws_default@{s3_bucket}/clean/w.mp4")) as pub:
        pub.write(os.urandom(9 * MIB))
        raise RuntimeError("verification failed")
    assert keys(s3_server, s3_bucket) == ["clean/v.mp4"] and open_uploads(s3_server, s3_bucket) == []


def test_the_path_names_the_connection_on_every_supported_airflow() -> None:
    """Airflow 3.3 exposes ``conn_id`` on the path, 3.1 only in its storage options: both must resolve."""
    assert conn_id_of(ObjectStoragePath("s3://landing_conn@bucket/clean/v.mp4")) == "landing_conn"
    assert conn_id_of(ObjectStoragePath("s3://bucket/clean/v.mp4")) is None
