from fastapi import APIRouter

from laku.core.errors import PROBLEM_RESPONSES

router = APIRouter(tags=["wallet"], responses=PROBLEM_RESPONSES)
