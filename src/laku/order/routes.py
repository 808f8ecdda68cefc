from fastapi import APIRouter

from laku.core.errors import PROBLEM_RESPONSES

router = APIRouter(tags=["order"], responses=PROBLEM_RESPONSES)
