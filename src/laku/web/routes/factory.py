"""The factory portal."""

from fastapi import APIRouter

router = APIRouter(prefix="/factory")
