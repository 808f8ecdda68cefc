from fastapi import FastAPI

from laku.core.sandbox import create_sandbox_app


def create_app() -> FastAPI:
    return create_sandbox_app("xendit")
