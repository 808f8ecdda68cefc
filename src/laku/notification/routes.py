from fastapi import APIRouter

from laku.core.errors import PROBLEM_RESPONSES

router = APIRouter(tags=["notification"], responses=PROBLEM_RESPONSES)
