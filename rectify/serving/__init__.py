"""A rectified LM behind an OpenAI-compatible HTTP API (FastAPI + uvicorn): ``python scripts/serve.py``."""

from rectify.serving.app import create_app
from rectify.serving.background import running_server
from rectify.serving.engine import Engine, RowOutput, RowSpec

__all__ = ["Engine", "RowOutput", "RowSpec", "create_app", "running_server"]
