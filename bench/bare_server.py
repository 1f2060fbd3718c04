"""The baseline of `bench/api_load.py`: a bare FastAPI endpoint that answers 201.

`POST /api/v2/tasks` reads the body and answers 201 with an answer shaped like Argus's
(`task_id`, `state`, `warnings`), served by uvicorn exactly as `argus server` serves Argus
(uvloop and httptools when installed, no access log, one process). What Argus does per accepted
task beyond this (auth, parse, check, insert, the scheduler) is what the benchmark's ratio prices.

Usage:
    python bench/bare_server.py PORT
"""

from __future__ import annotations

import itertools
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()
_ids = itertools.count(1)


@app.post("/api/v2/tasks", status_code=201)
async def submit(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"task_id": f"bare-{next(_ids)}", "state": "QUEUED", "warnings": []}, status_code=201)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
