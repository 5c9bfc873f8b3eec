"""The ASGI app of ``semhash serve``: a JSON API and a search page over one collection.

Models and indexes are loaded once per process (:class:`~semhash.server.live.LiveCollection`,
which also notices another process's writes). Every answer is JSON with the fields of the
command line's ``--json``; a failure is ``{"detail": "<the CLI's one line>"}`` with its
status: 400 bad input, 401/403 a write without the token, 404 no such document, 413 too
large, 503 nothing to search yet. The page at ``/`` and every file it needs are served from
this package: it works offline.

Reads are open; writes (``POST /api/documents``, ``DELETE /api/documents/{key}``) need the token the server was started with,
and without one the server is read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from semhash.codes import to_hex
from semhash.index.database import Database, DatabaseError
from semhash.index.models import IMAGES, TEXT
from semhash.index.search import MAX_RADIUS, SearchOptions, snippet
from semhash.pipelines.corpus_common import Document
from semhash.pipelines.deleting import delete_documents
from semhash.pipelines.errors import user_message
from semhash.pipelines.image_reading import decode_image
from semhash.pipelines.images import stored_pixels
from semhash.pipelines.indexing import add_documents
from semhash.server.batching import QueryBatcher
from semhash.server.live import Generation, LiveCollection

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
TOKEN_VARIABLE = "SEMHASH_TOKEN"


@dataclass(frozen=True)
class ServerConfig:
    """What ``semhash serve`` is told: the database, the write token, and the bounds on requests."""

    database: str
    token: str | None = None  # None: read-only
    index_dir: str | None = None
    poll_seconds: float = 1.0  # how often to look for another process's writes (0: never)
    max_query_bytes: int = 64 * 2**10  # a query's text (a whole document is fine)
    max_k: int = 1000
    max_upload_bytes: int = 8 * 2**20  # an image to search by
    max_body_bytes: int = 64 * 2**20  # any request body (documents to add)
    max_documents: int = 10_000  # documents in one add request


class ApiError(Exception):
    """A request the server refuses, with its status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- request models
class Options(BaseModel):
    """How to search, as :class:`~semhash.index.search.SearchOptions` (None: the default)."""

    k: int = Field(10, ge=1, description="Number of hits.")
    space: Literal["hamming", "euclidean"] = "hamming"
    mode: Literal["exhaustive", "address", "cells"] = "exhaustive"
    radius: int | None = Field(None, ge=0, le=MAX_RADIUS, description="address mode: Hamming radius of the ball.")
    max_candidates: int | None = Field(None, ge=1, description="address mode: items looked at, nearest addresses first.")
    probes: int | None = Field(None, ge=1, description="cells mode: cells visited.")
    rerank: bool = Field(False, description="Order the Hamming candidates by TF-IDF cosine (text).")
    candidates: int | None = Field(None, ge=1, description="With rerank: Hamming candidates re-ranked.")

    def options(self) -> SearchOptions:
        return SearchOptions.given(**self.model_dump(include=set(Options.model_fields)))


class SearchRequest(Options):
    """A search by free text ``q``, or by a binary code in hex (``code``)."""

    q: str | None = Field(None, description="The query text: a few words or a whole document.")
    code: str | None = Field(None, description="Instead of q: a binary code in hex, as /api/encode gives.")


class RecallRequest(BaseModel):
    """Recall whole documents from a fragment of text, or from a (damaged) code in hex."""

    q: str | None = Field(None, description="A fragment of a stored document.")
    code: str | None = Field(None, description="Instead of q: a binary code in hex.")
    k: int = Field(1, ge=1)
    codes_only: bool = Field(False, description="Query the memory of codes alone, without word units.")


class NewDocument(BaseModel):
    text: str
    id: str | None = Field(None, description="Unique id; default: derived from the text. Stored ids are skipped.")
    title: str | None = None
    label: str | None = None
    labels: list[str] | None = None


class AddRequest(BaseModel):
    documents: list[NewDocument]


class HitOut(BaseModel):
    id: int
    external_id: str
    distance: float
    title: str | None
    label: str | None
    source: str | None
    snippet: str


class HitsOut(BaseModel):
    hits: list[HitOut]


def query_model(model: type[BaseModel]):
    """``model`` read from the query string, as a dependency: what FastAPI's query-parameter
    models do (a repeated parameter gives its last value, unknown ones are ignored, a bad
    one is a 400 naming it) without their per-field alias matching, which was a third of a
    search's time under load. :func:`query_parameters` documents the fields in the schema."""

    async def read(request: Request) -> BaseModel:
        try:
            return model.model_validate(dict(request.query_params))
        except ValidationError as error:
            raise ApiError(400, _first_error(error.errors())) from None

    return Depends(read)


def query_parameters(model: type[BaseModel]) -> dict:
    """The OpenAPI description of ``model``'s fields as query parameters (``openapi_extra``)."""
    schema = model.model_json_schema()
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        parameters.append({"name": name, "in": "query", "required": name in schema.get("required", ()),
                           "schema": field, **({"description": description} if description else {})})
    return {"parameters": parameters}


def _first_error(errors: list[dict], skip: int = 0) -> str:
    """One line for the first of pydantic's errors: where (``skip`` leading parts of its
    location dropped) and what."""
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())[skip:]) or "request"
    return f"{where}: {first.get('msg', 'invalid')}"


# ----------------------------------------------------------------------------- the app
def create_app(config: ServerConfig, collection: LiveCollection | None = None) -> FastAPI:
    """The app over ``config.database`` (or an already open ``collection``)."""
    _one_thread_per_request()
    live = collection or LiveCollection(config.database, poll_seconds=config.poll_seconds, index_dir=config.index_dir)

    @asynccontextmanager
    async def lifespan(_app):
        live.start()
        try:
            yield
        finally:
            live.close()

    app = FastAPIOffline(
        title="semhash", summary="Search a collection by semantic hashing codes.", lifespan=lifespan,
        description="Every answer is JSON with the fields of `semhash ... --json`; an error is "
                    '`{"detail": "one line"}`. Writes need `Authorization: Bearer <token>`.',
    )
    app.state.live, app.state.config = live, config
    app.add_middleware(GZipMiddleware, minimum_size=64 * 1024)  # the map, not a page of hits: not worth its time
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def generation(*, ready: bool = True) -> Generation:
        current = live.current
        if ready and not current.ready:
            raise ApiError(503, f"{live.db.location} has nothing to search yet: no trained model "
                                "(build it with `semhash index` or `semhash images index`)")
        return current

    def text_of(value: str | None, what: str = "q") -> str:
        if value is None or not value.strip():
            raise ApiError(400, f"give the query text ({what})")
        if len(value.encode()) > config.max_query_bytes:
            raise ApiError(413, f"the query is over {config.max_query_bytes // 1024} KiB")
        return value

    def check_k(k: int) -> None:
        if k > config.max_k:
            raise ApiError(400, f"k may be at most {config.max_k}, got {k}")

    def collection_is(current: Generation, kind) -> None:
        if current.engine.collection is not kind:
            raise ApiError(400, f"this is a collection of {current.engine.collection.kind}s: "
                                f"use the {current.engine.collection.kind} endpoints")

    # ------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    # ------------------------------------------------------------------ about
    @app.get("/api/health", summary="Whether the server has a collection to search")
    async def health():
        current = live.current
        body = {"ready": current.ready, "collection": current.engine.collection.kind}
        return JSONResponse(body, status_code=200 if current.ready else 503)

    @app.get("/api/info", summary="The collection: documents, labels, models (as `semhash info --json`)")
    async def info():
        current = generation(ready=False)
        stats = await run_in_threadpool(lambda: current.derive("info", live.db.stats))
        return _json({**stats, "collection": current.engine.collection.kind, "database": live.db.location,
                      "writable": config.token is not None, "max_k": config.max_k,
                      "max_upload_bytes": config.max_upload_bytes, "max_query_bytes": config.max_query_bytes,
                      "search_batches": {"batches": searches.batches, "queries": searches.items},
                      "similar_batches": {"batches": similars.batches, "queries": similars.items}})

    # ------------------------------------------------------------------ text search
    def answer_searches(options: SearchOptions, texts: list[str]) -> list:
        current = generation()  # the latest, should it have been reloaded since the requests came
        collection_is(current, TEXT)
        return current.engine.search_many(texts, options=options)

    searches = QueryBatcher(answer_searches)  # concurrent text queries, answered together
    similars = QueryBatcher(lambda options, keys: generation().engine.similar_many(keys, options=options))
    app.state.searches, app.state.similars = searches, similars

    async def run_search(request: SearchRequest) -> Response:
        current = generation()
        collection_is(current, TEXT)
        check_k(request.k)
        if (request.q is None) == (request.code is None):
            raise ApiError(400, "give either the query text (q) or a binary code in hex (code)")
        if request.code is not None:
            return _hits(current.engine.search_code(text_of(request.code, "code"), options=request.options()))
        return _hits(await searches(request.options(), text_of(request.q)))

    @app.get("/api/search", response_model=HitsOut, summary="Documents nearest in meaning to a text",
             openapi_extra=query_parameters(SearchRequest))
    async def search(request: Annotated[SearchRequest, query_model(SearchRequest)]):
        return await run_search(request)

    @app.post("/api/search", response_model=HitsOut, summary="The same, with the query in a JSON body")
    async def search_post(request: SearchRequest):
        return await run_search(request)

    @app.get("/api/similar/{key:path}", response_model=HitsOut,
             summary="Items nearest to a stored one (id or external id), itself excluded",
             openapi_extra=query_parameters(Options))
    async def similar(key: Annotated[str, PathParam(description="numeric id or external id")],
                      request: Annotated[Options, query_model(Options)]):
        check_k(request.k)
        generation()  # 503 when there is nothing to search
        return _hits(await similars(request.options(), key))

    @app.get("/api/documents/{key:path}", summary="One stored document, whole")
    async def document(key: str):
        doc = generation(ready=False).engine.db.find_document(key)
        return _json({"id": doc.id, "external_id": doc.external_id, "kind": doc.kind, "title": doc.title,
                      "label": doc.label, "labels": list(doc.labels), "source": doc.source, "text": doc.text,
                      "snippet": snippet(doc.text or "")})

    @app.get("/api/encode", summary="The code of a text: hex for the binary code, numbers for the map")
    async def encode(q: str, space: Literal["hamming", "euclidean"] = "hamming"):
        current = generation()
        collection_is(current, TEXT)
        code = current.engine.encode(text_of(q), space)[0]
        return _json({"space": space, "code": to_hex(code) if space == "hamming" else [float(x) for x in code]})

    def run_recall(request: RecallRequest) -> Response:
        current = generation()
        collection_is(current, TEXT)
        check_k(request.k)
        if (request.q is None) == (request.code is None):
            raise ApiError(400, "give either a fragment of text (q) or a binary code in hex (code)")
        memory = current.memory(request.codes_only)
        hits = (memory.recall_code(text_of(request.code, "code"), request.k) if request.code is not None
                else memory.recall_text(text_of(request.q), request.k))
        return _json({"hits": [hit.to_dict() for hit in hits]})

    # Recall builds its memory on first use (seconds): off the event loop.
    @app.get("/api/recall", summary="Whole stored documents from a fragment of one, or from a damaged code",
             openapi_extra=query_parameters(RecallRequest))
    def recall(request: Annotated[RecallRequest, query_model(RecallRequest)]):
        return run_recall(request)

    @app.post("/api/recall", summary="The same, with the fragment in a JSON body")
    def recall_post(request: RecallRequest):
        return run_recall(request)

    @app.get("/api/map", summary="Every item's 2-D map code, label and title (for the page's map)")
    def map_points():
        current = generation()
        # The body is kept, not the Response: middleware (gzip) rewrites a response's headers.
        return Response(current.derive("map", lambda: _map_points(current)), media_type="application/json")

    # ------------------------------------------------------------------ writes
    def writer(authorization: Annotated[str | None, Header()] = None) -> None:
        if config.token is None:
            raise ApiError(403, f"this server is read-only: start it with --token (or {TOKEN_VARIABLE}) to accept writes")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), config.token.encode()):
            raise ApiError(401, "a write needs the server's token: send the header 'Authorization: Bearer <token>'")

    @app.post("/api/documents", dependencies=[Depends(writer)],
              summary="Add documents (encoded with the stored models; stored ids are skipped). Needs the token.")
    def add(request: AddRequest):
        current = generation()
        collection_is(current, TEXT)
        if not request.documents:
            raise ApiError(400, "no documents to add")
        if len(request.documents) > config.max_documents:
            raise ApiError(413, f"at most {config.max_documents} documents per request, got {len(request.documents)}")
        documents = [_document(item, i) for i, item in enumerate(request.documents)]
        result = add_documents(config.database, documents)
        live.refresh()  # the writer sees its own write at once
        return _json(result)

    @app.delete("/api/documents/{key:path}", dependencies=[Depends(writer)],
                summary="Delete a stored document (id or external id) with its codes. Needs the token.")
    def delete(key: Annotated[str, PathParam(description="numeric id or external id")]):
        result = delete_documents(config.database, [key])  # KeyError (404) when no document has that key
        live.refresh()  # the writer sees its own write at once
        return _json(result)

    # ------------------------------------------------------------------ images
    @app.post("/api/images/search", response_model=HitsOut,
              summary="Images nearest to an uploaded PNG or JPEG (the request body)",
              openapi_extra={**query_parameters(Options), "requestBody": {"required": True, "content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}})
    def images_search(http: Request, request: Annotated[Options, query_model(Options)]):
        current = generation()
        collection_is(current, IMAGES)
        check_k(request.k)
        data = _read_body(http, config.max_upload_bytes)
        pixels = decode_image(data, "the uploaded file")
        return _hits(current.engine.search_input(pixels.reshape(1, -1), options=request.options()))

    @app.get("/api/images/similar/{key:path}", response_model=HitsOut,
             summary="Images nearest to a stored one (id or external id), itself excluded",
             openapi_extra=query_parameters(Options))
    async def images_similar(key: str, request: Annotated[Options, query_model(Options)]):
        current = generation()
        collection_is(current, IMAGES)
        check_k(request.k)
        return _hits(await similars(request.options(), key))

    @app.get("/api/images/{doc_id}.png", summary="A stored image as PNG (scaled up by `scale`)",
             response_class=Response)
    def image_png(doc_id: int, scale: Annotated[int, Query(ge=1, le=8)] = 1):
        from PIL import Image

        db = generation(ready=False).engine.db
        db.find_document(doc_id)  # 404 when unknown
        pixels = stored_pixels(db, [doc_id])[0]
        image = Image.fromarray(pixels)
        if scale > 1:
            image = image.resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png",
                        headers={"Cache-Control": "public, max-age=3600"})

    return app


# ----------------------------------------------------------------------------- helpers
def _one_thread_per_request() -> None:
    """A query's work is a few small products: thread pools only add hand-offs, and in
    several workers on few cores their spinning threads starve each other."""
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def _json(body) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, default=str), media_type="application/json")


def _hits(hits) -> Response:
    return _json({"hits": [hit.to_dict() for hit in hits]})


def _document(item: NewDocument, position: int) -> Document:
    if not item.text.strip():
        raise ApiError(400, f"document {position} has no text")
    external_id = item.id or f"sha256:{hashlib.sha256(item.text.encode()).hexdigest()[:16]}"
    return Document(external_id=external_id, text=item.text, title=item.title, label=item.label,
                    labels=tuple(item.labels or ()), source="api")


def _read_body(http: Request, limit: int) -> bytes:
    """The request body already received by :class:`BodyLimit` (bounded), checked against ``limit``."""
    data = http.scope.get("semhash.body", b"")
    if not data:
        raise ApiError(400, "send the image as the request body (Content-Type image/png or image/jpeg)")
    if len(data) > limit:
        raise ApiError(413, f"the upload is over {limit // 2**20} MiB")
    return data


def _map_points(current: Generation) -> bytes:
    """The map of the collection as compact JSON: parallel lists, labels as indexes."""
    engine = current.engine
    name = engine.collection.map
    if not engine.has_model(name):
        raise ApiError(404, "this collection has no 2-D map model"
                            + (" yet: draw it once with `semhash images map`" if engine.collection is IMAGES else ""))
    model = engine.db.get_model(name, with_weights=False)
    if model.n_dims != 2:
        raise ApiError(404, f"the map model has {model.n_dims} dimensions; the page draws 2-D maps")
    ids, points = engine.db.get_codes(model.id)
    documents = engine.db.get_documents(ids.tolist())
    names = sorted({doc.label for doc in documents if doc.label is not None})
    index = {label: i for i, label in enumerate(names)}
    return json.dumps({
        "ids": ids.tolist(),
        "x": np.round(points[:, 0].astype(float), 4).tolist(),
        "y": np.round(points[:, 1].astype(float), 4).tolist(),
        "labels": [index.get(doc.label, -1) for doc in documents],
        "label_names": names,
        "titles": [(doc.title or doc.external_id)[:120] for doc in documents],
    }, ensure_ascii=False).encode()


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request, exc: RequestValidationError):
        return error(400, _first_error(exc.errors(), skip=1))  # skip "query", "body"...

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    async def failure(_request, exc: Exception):
        message = user_message(exc)
        if message is None:
            log.error("internal error", exc_info=exc)
            return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")
        if isinstance(exc, KeyError):
            return error(404, message)
        return error(503 if isinstance(exc, DatabaseError) else 400, message)

    # Every error type semhash raises on purpose derives from one of these; anything else
    # is a bug, answered 500 by Starlette (and logged with its traceback).
    for kind in (ValueError, KeyError, RuntimeError, OSError):
        app.add_exception_handler(kind, failure)


class BodyLimit:
    """Refuse a request body over ``limit`` bytes (413), by its Content-Length or as it streams
    in; a body within the limit is kept in the scope for handlers that read it raw."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                return await _too_large(send, self.limit)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        scope["semhash.body"] = body
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"the request body is over {limit // 2**20} MiB"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- serving
def serve(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the app under uvicorn until interrupted. With ``workers`` > 1, each worker process
    loads the collection itself (the configuration reaches them through the environment)."""
    import uvicorn

    os.environ[_CONFIG_VARIABLE] = json.dumps(config.__dict__)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")  # for the workers, before they load numpy and torch
    with Database(config.database, create=False) as db:  # no such database: say so here, once
        log.info(f"serving {db.location} on http://{host}:{port} "
                 f"({'writes need the token' if config.token else 'read-only'}); Ctrl-C stops it")
    # A worker loading a large collection on a busy machine answers the supervisor's ping late:
    # the default 5 s had workers killed and restarted in a loop.
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False, timeout_worker_healthcheck=120)


_CONFIG_VARIABLE = "SEMHASH_SERVER_CONFIG"


def app_from_environment() -> FastAPI:
    """The app of the configuration :func:`serve` left in the environment (uvicorn's factory)."""
    return create_app(ServerConfig(**json.loads(os.environ[_CONFIG_VARIABLE])))
