"""A photo on its way from the admin's browser to product-service, which checks and sizes it.
Phone cameras make photos of several MB; the services take bodies up to 1 MiB, so a photo too
big for that is first scaled down here (product-service still decides what is kept)."""

import io

from PIL import Image, UnidentifiedImageError

from laku.core.errors import InvalidInput

# What fits in product-service's body limit once base64 (4/3) and JSON are around it.
MAX_FORWARDED_BYTES = 700_000
TRANSFER_SIDE_PX = 2048


class NoPhoto(InvalidInput):
    code = "not_an_image"


def fit_for_upload(data: bytes) -> bytes:
    if len(data) <= MAX_FORWARDED_BYTES:
        return data
    try:
        with Image.open(io.BytesIO(data)) as photo:
            photo.thumbnail((TRANSFER_SIDE_PX, TRANSFER_SIDE_PX))
            out = io.BytesIO()
            photo.convert("RGB").save(out, "JPEG", quality=85)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise NoPhoto("The file is not an image") from None
    return out.getvalue()
