from fastapi import APIRouter

from laku.core.errors import PROBLEM_RESPONSES

router = APIRouter(tags=["group_buying"], responses=PROBLEM_RESPONSES)
