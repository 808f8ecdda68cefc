"""The pages' words (web/messages.toml): every text in both languages, and every key the
templates and routes ask for present (a missing one would show its bare key to buyers)."""

import re
import string
from pathlib import Path

import pytest

from laku.web.i18n import LANGUAGES, MESSAGES, PROBLEMS

WEB = Path(__file__).resolve().parent.parent / "src" / "laku" / "web"
ASKED_FOR = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']""")


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("table", [MESSAGES, PROBLEMS], ids=["pages", "refusals"])
def test_every_text_is_in_both_languages_with_the_same_values_to_fill_in(
    table: dict[str, dict[str, str]],
) -> None:
    for key, texts in table.items():
        assert set(texts) == set(LANGUAGES), key
        assert all(text.strip() for text in texts.values()), key
        assert _placeholders(texts["id"]) == _placeholders(texts["en"]), key


def test_every_key_the_pages_ask_for_has_its_texts() -> None:
    sources = [*WEB.rglob("*.html"), *WEB.rglob("*.py")]
    asked = {key for path in sources for key in ASKED_FOR.findall(path.read_text())}
    assert len(asked) > 150  # the pattern still finds the pages' keys
    assert sorted(asked - MESSAGES.keys()) == []
