"""A new SomaAgent service that knows nothing of the library: FastAPI, logging, nothing else.

The package test copies this file out of the repository and runs it in a fresh venv under plain
``opentelemetry-instrument``. ``GET /v1/items/0`` fails with 500, so that its trace is one the
tail sampler always keeps; every request logs one warning that carries the caller's secrets in
an ``extra`` field and in its text.
"""

import logging
import sys

import uvicorn
from fastapi import FastAPI, HTTPException, Request

app = FastAPI()
log = logging.getLogger("probe")


@app.get("/v1/items/{item_id}")
async def read_item(item_id: int, request: Request) -> dict[str, int]:
    """Echo the item id (item 0 fails), logging the caller's credentials as careless code does."""
    log.warning(
        "item %d served to %s",
        item_id,
        request.headers.get("authorization", ""),
        extra={"api_key": request.query_params.get("access_token", "")},
    )
    if item_id == 0:
        raise HTTPException(500, "item zero always fails")
    return {"item_id": item_id}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness, on its own route."""
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
