from fastapi import APIRouter

from laku.core.errors import PROBLEM_RESPONSES

router = APIRouter(tags=["product"], responses=PROBLEM_RESPONSES)
