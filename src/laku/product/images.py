"""Product photos: checked to be an image, sized for phones, kept on local disk or in
S3-compatible object storage. Buyers are mostly on low-end phones on mobile data, so a photo is
stored once at 1080 px and as a JPEG."""

import asyncio
import base64
import binascii
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, UnidentifiedImageError

from laku.core.errors import InvalidInput
from laku.core.services import service_url
from laku.core.settings import Settings

MAX_SIDE_PX = 1080
JPEG_QUALITY = 80
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF"})
# A decompression bomb (a tiny file that opens to gigapixels) is refused before it is decoded.
MAX_PIXELS = 40_000_000


class NotAnImage(InvalidInput):
    code = "not_an_image"


class PhotoStore(Protocol):
    def put(self, key: str, jpeg: bytes) -> str:
        """Keep the JPEG under `key`; the URL buyers load it from."""
        ...


@dataclass(frozen=True)
class DiskPhotoStore:
    """Development: files under `media_dir`, which the web serves at /media."""

    directory: Path
    base_url: str

    def put(self, key: str, jpeg: bytes) -> str:
        target = self.directory / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg)
        return f"{self.base_url}/{key}"


@dataclass(frozen=True)
class S3PhotoStore:
    """S3-compatible object storage (AWS S3, MinIO, Cloudflare R2...): every replica of product
    and web sees the same photos, and a CDN can serve them."""

    client: Any  # a boto3 S3 client
    bucket: str
    base_url: str

    def put(self, key: str, jpeg: bytes) -> str:
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=jpeg,
            ContentType="image/jpeg",
            # A key is never written twice: a new photo gets a new key.
            CacheControl="public, max-age=31536000, immutable",
        )
        return f"{self.base_url}/{key}"


def photo_store(settings: Settings) -> PhotoStore:
    """S3 when `media_s3_bucket` is set, else the local disk."""
    bucket = settings.media_s3_bucket
    if bucket is None:
        directory = settings.media_dir or settings.data_dir / "media"
        base_url = settings.media_base_url or f"{service_url('web', settings)}/media"
        return DiskPhotoStore(directory.resolve(), base_url.rstrip("/"))
    import boto3  # only where photos go to S3: it weighs tens of MB in every process

    secret = settings.media_s3_secret_access_key
    client = boto3.client(
        "s3",
        endpoint_url=settings.media_s3_endpoint_url,
        region_name=settings.media_s3_region,
        aws_access_key_id=settings.media_s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
    )
    endpoint = settings.media_s3_endpoint_url
    bucket_url = (
        f"{endpoint.rstrip('/')}/{bucket}"
        if endpoint
        else f"https://{bucket}.s3.{settings.media_s3_region}.amazonaws.com"
    )
    return S3PhotoStore(client, bucket, (settings.media_base_url or bucket_url).rstrip("/"))


async def save_for_phones(store: PhotoStore, product_id: uuid.UUID, data_base64: str) -> str:
    """The photo resized to fit 1080 x 1080 as a JPEG under products/<id>/; its URL. Decoding,
    resizing and storing run in a thread: a camera photo takes a while, and the event loop
    serves everyone else meanwhile."""
    return await asyncio.to_thread(_save_for_phones, store, product_id, data_base64)


def _save_for_phones(store: PhotoStore, product_id: uuid.UUID, data_base64: str) -> str:
    try:
        data = base64.b64decode(data_base64, validate=True)
    except (binascii.Error, ValueError):
        raise NotAnImage("data is not base64") from None
    photo = _decoded(data)
    photo.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    return store.put(f"products/{product_id}/{uuid.uuid4().hex}.jpg", jpeg.getvalue())


def _decoded(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ACCEPTED_FORMATS:
                raise NotAnImage(f"Not a JPEG, PNG, WebP or GIF image ({probe.format})")
            if probe.width * probe.height > MAX_PIXELS:
                raise NotAnImage("The image has too many pixels")
            probe.verify()  # a truncated or corrupt file is refused here
        photo = Image.open(io.BytesIO(data))
        photo.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        raise NotAnImage("The file is not an image") from None
    return photo.convert("RGB")
