"""How amounts and times read in Indonesia: `Rp 150.000`, times in WIB (UTC+7, no summer time)."""

from datetime import UTC, datetime, timedelta, timezone

WIB = timezone(timedelta(hours=7), "WIB")


def rupiah(amount: int | None) -> str:
    if amount is None:
        return "-"
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp {abs(amount):,}".replace(",", ".")


def wib(moment: datetime | str | None) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(WIB).strftime("%d/%m/%Y %H:%M WIB")


def seconds_left(moment: datetime | str, now: datetime | None = None) -> int:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return max(0, int((moment - (now or datetime.now(UTC))).total_seconds()))


def duration(seconds: int, lang: str) -> str:
    """`2h 3j 4m` in Indonesian (hari, jam, menit), `2d 3h 4m` in English; under a minute,
    its seconds (`45d` detik, `45s`)."""
    if seconds < 60:
        return f"{seconds}{'d' if lang == 'id' else 's'}"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    units = ("h", "j", "m") if lang == "id" else ("d", "h", "m")
    parts = [f"{value}{unit}" for value, unit in zip((days, hours, minutes), units, strict=True)]
    return " ".join(parts[0:] if days else parts[1:])
