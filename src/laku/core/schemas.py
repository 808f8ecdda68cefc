"""Wire-model conventions: camelCase on the wire, snake_case in code, unknown fields refused;
numbers bounded and text free of control characters, so hostile input is a 422 and never
reaches the database."""

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

from fastapi import Depends, Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

T = TypeVar("T")

# PostgreSQL's BIGINT; no integer on the wire may pass it.
MAX_BIGINT = 2**63 - 1
# Far beyond any real list, far below BIGINT (PostgreSQL refuses an OFFSET past it).
MAX_OFFSET = 1_000_000_000

# C0 controls, DEL and C1 controls: never part of a name, an address or a note.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Multi-line text keeps tab, line feed and carriage return.
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# NUL, which PostgreSQL stores in no text or JSON, and a lone surrogate (a JSON "\ud800"),
# which has no UTF-8 encoding to send it in.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _single_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _multi_line(value: str) -> str:
    if _CONTROL_BUT_LINE_BREAKS.search(value):
        raise ValueError("must not contain control characters other than tab and line breaks")
    return value


def _storable(value: Any) -> Any:
    """Refuse, in any string however nested, what the database cannot store."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise ValueError("must not contain NUL or unpaired surrogate characters")
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _storable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    return value


SingleLine = AfterValidator(_single_line)
MultiLine = AfterValidator(_multi_line)


def Text(max_length: int, *, min_length: int = 1, **field: Any) -> Any:
    """A single line of text (a name, an address, a reason): no control characters."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length, **field), SingleLine]


def MultilineText(max_length: int, *, min_length: int = 1, **field: Any) -> Any:
    """Text that may span lines (a description, a message): tab and line breaks only."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length, **field), MultiLine]


def Batch(item_type: Any, max_length: int, *, distinct: str) -> Any:
    """A bulk call's items: 1 to `max_length` of them, no two with the same `distinct` field."""

    def _distinct(items: list[Any]) -> list[Any]:
        if len({getattr(item, distinct) for item in items}) != len(items):
            raise ValueError(f"each {to_camel(distinct)} may appear once")
        return items

    return Annotated[
        list[item_type], Field(min_length=1, max_length=max_length), AfterValidator(_distinct)
    ]


# Core-schema nodes that hold no text of the model's own: fixed values, numbers, ids, moments,
# and nested models (each checks its own fields).
_TEXTLESS = frozenset(
    {
        "none", "bool", "int", "float", "decimal", "date", "time", "datetime", "timedelta",
        "uuid", "literal", "enum", "model", "dataclass", "definition-ref",
    }
)  # fmt: skip


_TEXT = frozenset({"str", "any", "bytes", "json", "url", "multi-host-url"})
# Keys of a core-schema node that describe no value it accepts.
_NOT_ACCEPTED = frozenset({"function", "metadata", "ref", "cls", "serialization", "config"})


def _may_hold_text(schema: Any) -> bool:
    """Whether values a core schema accepts may contain a string (conservative: a node of a
    kind not known here, with nothing inside, counts as text)."""
    if isinstance(schema, list | tuple):
        return any(_may_hold_text(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind in _TEXTLESS:
        return False
    if kind in _TEXT:
        return True
    children = [
        value
        for key, value in schema.items()
        if key not in _NOT_ACCEPTED and isinstance(value, dict | list | tuple)
    ]
    if kind is None:  # a mapping of schemas (a tagged union's choices)
        return any(map(_may_hold_text, children))
    # A wrapper (nullable, default, list, dict, union, a validator around a schema) holds text
    # if what it wraps does.
    return any(map(_may_hold_text, children)) if children else True


class StorableModel(BaseModel):
    """A model whose every string, at any depth, is refused (422, not a database error) with
    a NUL or a lone surrogate in it; the text types refuse other control characters too.
    Only the fields that can hold text are checked: a check on every field (ids, amounts,
    moments) cost a third of the time it takes to read a model."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = handler(source)
        node: Any = schema
        # Down through the model's own validators to its fields.
        while node.get("type") == "model" or node.get("type", "").startswith("function-"):
            node = node["schema"]
        if node.get("type") != "model-fields":
            raise TypeError(f"{cls.__name__}: no model-fields schema, its text would go unchecked")
        fields = node["fields"]
        for name, field in fields.items():
            if _may_hold_text(field["schema"]):
                fields[name] = {**field, "schema": _checked(field["schema"])}
        return schema


def _checked(schema: core_schema.CoreSchema) -> core_schema.CoreSchema:
    """`schema` with the storable check after it; inside its default, which must stay
    outermost (it is what makes a field optional)."""
    if schema["type"] == "default":
        return {**schema, "schema": _checked(schema["schema"])}
    return core_schema.no_info_after_validator_function(_storable, schema)


class WireModel(StorableModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        extra="forbid",
        str_strip_whitespace=True,
        serialize_by_alias=True,
    )


class PartialUpdate(WireModel):
    """A partial update: only the fields sent change. `null` clears the fields in `CLEARABLE`
    and is refused for the others; with `CHANGES_SOMETHING`, an empty update is refused too."""

    CLEARABLE: ClassVar[frozenset[str]] = frozenset()
    CHANGES_SOMETHING: ClassVar[bool] = True

    @model_validator(mode="after")
    def _nothing_required_is_cleared(self) -> Self:
        if self.CHANGES_SOMETHING and not self.model_fields_set:
            raise ValueError("send at least one field to change")
        fields = type(self).model_fields
        nulled = sorted(
            fields[name].alias or name
            for name in self.model_fields_set - self.CLEARABLE
            if getattr(self, name) is None
        )
        if nulled:
            raise ValueError(f"may not be null: {', '.join(nulled)}")
        return self


class ProviderModel(StorableModel):
    """A provider's payload (a webhook) as the provider names it; fields we do not read are
    ignored, as providers add fields over time."""

    model_config = ConfigDict(extra="ignore")


Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


@dataclass(frozen=True)
class PageWindow:
    """The slice of a list a caller asked for (`limit` and `offset` on the query string)."""

    limit: int
    offset: int


def _window(limit: Limit = 20, offset: Offset = 0) -> PageWindow:
    return PageWindow(limit, offset)


def _long_window(limit: Limit = 50, offset: Offset = 0) -> PageWindow:
    return PageWindow(limit, offset)


# A list endpoint's paging: 20 rows unless asked; `LongPaging` for lists read a screen at a
# time (a buyer's wallet, a warehouse's stock), 50.
Paging = Annotated[PageWindow, Depends(_window)]
LongPaging = Annotated[PageWindow, Depends(_long_window)]


class Page(WireModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(
        cls,
        rows: Iterable[Any],
        total: int,
        window: PageWindow,
        shape: type[BaseModel] | None = None,
    ) -> Self:
        """The page of `rows` (validated as `shape` when given) out of `total`."""
        items = list(rows) if shape is None else [shape.model_validate(row) for row in rows]
        return cls(items=items, total=total, limit=window.limit, offset=window.offset)

    @classmethod
    async def read(
        cls,
        window: PageWindow,
        shape: type[BaseModel],
        query: Callable[..., Awaitable[tuple[Sequence[Any], int]]],
        *args: Any,
        **filters: Any,
    ) -> Self:
        """The page of `window` that a list query (rows and their total, by `limit` and
        `offset`) answers, as `shape`."""
        rows, total = await query(*args, **filters, limit=window.limit, offset=window.offset)
        return cls.of(rows, total, window, shape)


# Query and path parameters are not wire models: their text types carry their own checks.
SearchText = Annotated[
    Annotated[str, SingleLine] | None,
    Query(min_length=1, max_length=100, description="Name contains"),
]
# A caller's reference ("session:<id>:participant:<id>"), as wire models accept it.
REFERENCE_PATTERN = r"^[A-Za-z0-9:_\-.]+$"
ReferencePath = Annotated[str, Path(min_length=1, max_length=200, pattern=REFERENCE_PATTERN)]
# A database row id of an integer key.
RowIdPath = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
