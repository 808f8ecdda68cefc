"""Product photos: checked to be an image, sized for phones, kept on local disk. Buyers are
mostly on low-end phones on mobile data, so a photo is stored once at 1080 px and as a JPEG."""

import base64
import binascii
import io
import uuid
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class MediaStore:
    """Where photos are written and the URL they are served from."""

    directory: Path
    base_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> "MediaStore":
        directory = settings.media_dir or settings.data_dir / "media"
        base_url = settings.media_base_url or f"{service_url('web', settings)}/media"
        return cls(directory.resolve(), base_url.rstrip("/"))

    def save_for_phones(self, product_id: uuid.UUID, data_base64: str) -> str:
        """The photo resized to fit 1080 x 1080 as a JPEG under products/<id>/; its URL."""
        try:
            data = base64.b64decode(data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise NotAnImage("data is not base64") from None
        photo = _decoded(data)
        photo.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
        relative = Path("products") / str(product_id) / f"{uuid.uuid4().hex}.jpg"
        target = self.directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        photo.save(target, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        return f"{self.base_url}/{relative.as_posix()}"


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
