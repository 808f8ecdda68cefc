from fastapi import APIRouter

from laku.core.errors import PROBLEM_RESPONSES

router = APIRouter(tags=["payment"], responses=PROBLEM_RESPONSES)
