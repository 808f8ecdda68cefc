"""A product's lifecycle states."""

from enum import StrEnum


class ProductStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"
