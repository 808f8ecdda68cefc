"""Product photos in S3-compatible object storage: a product-service given a bucket keeps each
photo there, sized for phones, linked from the bucket's URL, and nothing on its disk. The
bucket is moto's standalone S3 server, standing in for S3 as the sandboxes do for providers."""

import base64
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform, bearer, free_port_offset, running_platform
from tests.support import assert_problem

BUCKET = "laku-photos"
PUBLIC_READ = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        }
    ],
}
CREDENTIALS = {"aws_access_key_id": "laku-test", "aws_secret_access_key": "laku-test-secret"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = _s3(endpoint)
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-southeast-3"}
    )
    # As an operator sets it up: anyone may read the photos, only Laku may write them.
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(PUBLIC_READ))
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_product(
    platform: Platform, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Path]]:
    """A second product-service (and the auth it verifies tokens with) on the same database,
    configured with the bucket; its own media folder, to show nothing lands there."""
    media_dir = tmp_path_factory.mktemp("unused-media")
    offset = free_port_offset()
    env = {
        **platform.supervisor.env,
        "LAKU_PORT_OFFSET": str(offset),
        "LAKU_MEDIA_DIR": str(media_dir),
        "LAKU_MEDIA_S3_BUCKET": BUCKET,
        "LAKU_MEDIA_S3_ENDPOINT_URL": s3_endpoint,
        "LAKU_MEDIA_S3_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "LAKU_MEDIA_S3_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "LAKU_DATABASE_POOL_SIZE": "1",
        "LAKU_DATABASE_MAX_OVERFLOW": "1",
    }
    with (
        running_platform(
            env,
            platform.database_url,
            log_dir=tmp_path_factory.mktemp("s3-product-logs"),
            service_env=platform.supervisor.service_env,
            services=["auth", "product"],
        ) as s3_platform,
        httpx.Client(base_url=s3_platform.url("product"), timeout=30) as client,
    ):
        yield client, media_dir


def _photo(width: int, height: int) -> str:
    image = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(image, "PNG")
    return base64.b64encode(image.getvalue()).decode()


def _s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="ap-southeast-3", **CREDENTIALS)


def _keys(endpoint: str) -> list[str]:
    listed = _s3(endpoint).list_objects_v2(Bucket=BUCKET)
    return [item["Key"] for item in listed.get("Contents", [])]


def test_a_photo_goes_to_the_bucket_sized_for_phones(
    platform: Platform, s3_endpoint: str, s3_product: tuple[httpx.Client, Path]
) -> None:
    product_service, media_dir = s3_product
    catalog = create_seed_catalog(platform, bundle={}, stock={})
    admin = bearer(platform.admin_token)
    upload = f"/api/products/{catalog.product_id}/images/upload"

    stored = product_service.post(upload, json={"dataBase64": _photo(2400, 1800)}, headers=admin)
    assert stored.status_code == 201, stored.text
    url = stored.json()["url"]
    prefix = f"{s3_endpoint}/{BUCKET}/products/{catalog.product_id}/"
    assert url.startswith(prefix) and url.endswith(".jpg"), url
    assert _keys(s3_endpoint) == [url.removeprefix(f"{s3_endpoint}/{BUCKET}/")]

    # What a buyer's phone loads: a 1080 px JPEG, cached for good (a key is never rewritten).
    served = httpx.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    with Image.open(io.BytesIO(served.content)) as photo:
        assert (photo.format, photo.size) == ("JPEG", (1080, 810))
    # The product lists it, and the disk has nothing.
    detail = platform.client("product").get(f"/api/products/{catalog.product_id}", headers=admin)
    assert [image["url"] for image in detail.json()["images"]] == [url]
    assert list(media_dir.rglob("*")) == []

    # Not an image: refused, and the bucket is as it was.
    refused = product_service.post(
        upload,
        json={"dataBase64": base64.b64encode(b"%PDF-1.7 not a photo").decode()},
        headers=admin,
    )
    assert_problem(refused, 422, "not_an_image")
    assert _keys(s3_endpoint) == [url.removeprefix(f"{s3_endpoint}/{BUCKET}/")]
