"""Settings only the web front end reads (`LAKU_WEB_*`)."""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAKU_WEB_", env_file=".env", extra="ignore")

    # The session cookie is sent only over HTTPS; off for `laku up` on http://127.0.0.1.
    cookie_secure: bool = False
    # Where links shared on WhatsApp and Open Graph point; None: this process's own URL.
    public_url: str | None = None


@lru_cache
def get_web_settings() -> WebSettings:
    return WebSettings()


STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"
