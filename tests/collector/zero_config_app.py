"""A minimal FastAPI service with no telemetry code at all, for the zero-configuration test."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    """Echo the item id."""
    return {"item_id": item_id}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness, on its own route so that it never touches the series under test."""
    return {"status": "ok"}
