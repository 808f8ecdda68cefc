"""The pages' words in Bahasa Indonesia (the default) and English, and the services' refusals
told in the page's language by their stable `code`."""

import tomllib
from pathlib import Path

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"

# The texts live in messages.toml, where a translator can change them without touching code.
_CATALOG = tomllib.loads((Path(__file__).parent / "messages.toml").read_text(encoding="utf-8"))
# key: {"id": Bahasa Indonesia, "en": English}
MESSAGES: dict[str, dict[str, str]] = _CATALOG["pages"]
PROBLEMS: dict[str, dict[str, str]] = _CATALOG["refusals"]

FIELD_LABELS = {
    "amount": "wallet.amount",
    "bankCode": "wallet.bank",
    "accountNumber": "wallet.account_number",
    "accountHolderName": "wallet.account_holder",
    "label": "addr.label",
    "recipientName": "addr.recipient",
    "phone": "addr.phone",
    "street": "addr.street",
    "city": "addr.city",
    "province": "addr.province",
    "postalCode": "addr.postal_code",
    "name": "auth.name",
    "email": "auth.email",
    "password": "auth.password",
    "periodStart": "adm.period_start",
    "periodEnd": "adm.period_end",
    "reason": "adm.reason",
}


def _language(lang: str) -> str:
    return "id" if lang == "id" else "en"


def translate(lang: str, key: str, **values: object) -> str:
    texts = MESSAGES.get(key)
    if texts is None:
        return key.split(".", 1)[-1]  # a status the pages do not know yet reads as itself
    text = texts[_language(lang)]
    return text.format(**values) if values else text


def problem_message(lang: str, code: str, detail: str | None, fields: tuple[str, ...] = ()) -> str:
    """The refusal by its code; an invalid input names the fields to check, as labelled."""
    texts = PROBLEMS.get(code)
    if texts is None:
        return translate(lang, "error.refused", detail=detail or code)
    message = texts[_language(lang)]
    named = (translate(lang, FIELD_LABELS[name]) for name in fields if name in FIELD_LABELS)
    labels = list(dict.fromkeys(named))
    if labels:
        message = f"{message.removesuffix('.')}: {', '.join(labels)}."
    return message
