"""The HTTP service: a JSON API over trained models (OpenAPI at ``/openapi.json``) and the page at ``/``.

Every request is checked against the configured ``Limits`` before a model sees it, and every error is a
JSON body ``{"error": {"code": ..., "message": ...}}`` with a 4xx status naming what was wrong. Models run
one call at a time (a lock): torch already spreads one call over the cores, and the layer's thread
heuristic changes a process-wide setting, so parallel calls would only contend. Concurrent predictions
are classified together (``batching``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import elman
from elman.errors import UsageError
from elman.inference import Classifier, TextGenerator
from elman.serve.batching import PredictionBatcher
from elman.serve.limits import Limits

STATIC = Path(__file__).parent / "static"
LOG = logging.getLogger("elman.serve")


class RequestError(Exception):
    """A request the service refuses: becomes ``status`` with a JSON error naming the problem."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class ServedModel:
    name: str
    model: Classifier | TextGenerator
    metrics: dict | None

    def summary(self) -> dict:
        config = self.model.config
        summary = {"name": self.name, "task": config["task"], "vocabulary_size": len(self.model.vocabulary),
                   "elman_version": config.get("elman_version"), "model": config.get("model")}
        if isinstance(self.model, Classifier):
            summary["labels"] = self.model.labels
        else:
            summary.update(kind=self.model.kind, conditions=self.model.conditions)
            if self.model.kind == "lines":  # generation stops at a line's end or after this many characters
                summary["max_length"] = self.model.max_length
        if self.metrics is not None:
            summary["metrics"] = {k: v for k, v in self.metrics.items() if k != "history"}
        return summary


def load_models(specs: list[str]) -> dict[str, ServedModel]:
    """``["DIR"]`` or ``["name=DIR", ...]`` -> served models by name (a bare DIR is named after its folder)."""
    models = {}
    for spec in specs:
        name, _, directory = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        if not name or name in models:
            raise UsageError(f"model names must be unique and non-empty: {spec!r}")
        metrics_path = Path(directory) / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            metrics = None  # the figures are informative only; the checkpoint itself was verified
        models[name] = ServedModel(name, elman.load(directory), metrics)
    if not models:
        raise UsageError("give at least one model: --model DIR or --model name=DIR")
    return models


# Requests: strict types (a number is not a text) and no unknown fields, so mistakes are reported, not guessed.
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = Field(None, description="name of a served model; default: the first one")


class PredictRequest(Strict):
    texts: list[StrictStr] = Field(description="texts to classify")
    top_k: Annotated[StrictInt, Field(ge=1, le=1000)] = 3
    prior: Literal["training", "uniform"] | None = Field(
        None, description="for a conditioned language model of lines, read as a classifier by Bayes' rule: the "
                          "conditions' prior, their frequencies in training (default) or equal")


class GenerateRequest(Strict):
    prime: StrictStr = ""
    length: Annotated[StrictInt, Field(ge=0)] | None = None
    temperature: Annotated[StrictFloat | StrictInt, Field(ge=0, le=100)] = 1.0
    top_k: Annotated[StrictInt, Field(ge=1)] | None = None
    top_p: Annotated[StrictFloat | StrictInt, Field(gt=0, le=1)] | None = None
    num_samples: Annotated[StrictInt, Field(ge=1)] = 1
    seed: StrictInt | None = None
    condition: StrictStr | None = None
    guidance: Annotated[StrictFloat | StrictInt, Field(ge=0, le=100)] = 0.0


class InspectRequest(Strict):
    text: StrictStr
    condition: StrictStr | None = None


def classifies(model: Classifier | TextGenerator) -> bool:
    """/v1/predict's models: classifiers, and conditioned language models of lines read by Bayes' rule."""
    return isinstance(model, Classifier) or model.classifies


def generates(model: Classifier | TextGenerator) -> bool:
    return isinstance(model, TextGenerator)


def any_model(model: Classifier | TextGenerator) -> bool:
    return True


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class BodyLimit:
    """ASGI middleware: reads the request body up to ``limit`` bytes, whether or not it declares its length,
    and refuses a larger one with 413 before the application sees any of it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self.refuse(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await self.refuse(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, scope, receive, send):
        response = error_response(413, "body_too_large",
                                  f"the request body is larger than max_body_bytes = {self.limit}")
        await response(scope, receive, send)


class InternalErrors:
    """ASGI middleware: an exception from inside the service (a bug, not a refusal of the request) becomes a
    JSON 500 and one log line with its traceback, instead of a plain-text 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = []

        async def sending(message):
            started.append(message["type"] == "http.response.start")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:  # noqa: BLE001 - logged with its traceback, answered as a 500
            LOG.exception("%s %s failed", scope["method"], scope["path"])
            if not any(started):
                await error_response(500, "internal_error", f"{scope['method']} {scope['path']} failed inside the "
                                     f"service ({type(error).__name__}); its log has the details")(scope, receive, send)


def create_app(models: dict[str, ServedModel], limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    lock = threading.Lock()
    app = FastAPI(title="elman", version=elman.__version__,
                  description="Elman recurrent networks over HTTP: classify, generate, inspect.")
    app.state.model_names = list(models)

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError):
        return error_response(error.status, error.code, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, code, f"{request.method} {request.url.path}: {error.detail}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        problems = error.errors()
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        json_sent = media_type == "application/json" or media_type.endswith("+json")
        if request.method == "POST" and not json_sent:  # FastAPI read the body as a form, not as JSON
            return error_response(415, "unsupported_media_type",
                                  f"the body must be JSON sent as Content-Type: application/json, got "
                                  f"{media_type or 'no Content-Type'} (curl: --json '{{...}}', or "
                                  f"-H 'Content-Type: application/json')")
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        described = "; ".join(f"{'.'.join(str(part) for part in p['loc'][1:]) or 'body'}: {p['msg']}"
                              for p in problems[:10])
        return error_response(422, "invalid_request", described)

    def served(name: str | None, can: Callable[[Classifier | TextGenerator], bool], wanted: str) -> ServedModel:
        """The model named, or without a name the first one that ``can`` do the endpoint's task (``wanted``)."""
        if name is None:
            entry = next((e for e in models.values() if can(e.model)), None)
            if entry is None:
                raise RequestError(422, "wrong_task", f"this endpoint needs {wanted}; serving {list(models)}, "
                                                      "none of which is one")
            return entry
        entry = models.get(name)
        if entry is None:
            raise RequestError(404, "unknown_model", f"no model named {name!r}; serving {list(models)}")
        if not can(entry.model):
            raise RequestError(422, "wrong_task", f"model {entry.name!r} is a {entry.model.config['task']!r} "
                                                  f"model; this endpoint needs {wanted}")
        return entry

    def within(value: int, limit: int, what: str, name: str) -> None:
        if value > limit:
            raise RequestError(422, "limit_exceeded", f"{what} is {value}; the limit is {name} = {limit}")

    def run(call):
        """A model call under the lock; the model's refusals of the input (unknown characters, bad options) are 422."""
        with lock:
            try:
                return call()
            except UsageError as error:
                raise RequestError(422, "invalid_input", str(error)) from None

    @app.get("/healthz")
    def health() -> dict:
        return {"status": "ok", "models": list(models)}

    @app.get("/v1/models")
    def list_models() -> dict:
        return {"models": [entry.summary() for entry in models.values()], "limits": asdict(limits)}

    @app.get("/v1/model")
    def describe(model: str | None = None) -> dict:
        entry = served(model, any_model, "a model")
        return {**entry.summary(), "limits": asdict(limits)}

    batchers = {name: PredictionBatcher(entry.model, lock) for name, entry in models.items()
                if isinstance(entry.model, Classifier)}

    @app.post("/v1/predict")
    async def predict(request: PredictRequest) -> dict:
        entry = served(request.model, classifies, "a classifier or a conditioned language model of lines")
        within(len(request.texts), limits.max_texts, "the number of texts", "max_texts")
        if not request.texts:
            raise RequestError(422, "invalid_input", "texts is empty; give at least one text")
        for position, text in enumerate(request.texts):
            within(len(text), limits.max_chars, f"the length of text {position}", "max_chars")
        try:
            texts = Classifier.clean(request.texts)
        except UsageError as error:
            raise RequestError(422, "invalid_input", str(error)) from None
        if isinstance(entry.model, TextGenerator):
            predictions = await run_in_threadpool(
                run, lambda: entry.model.classify(texts, request.top_k, request.prior or "training"))
        elif request.prior is not None:
            raise RequestError(422, "invalid_input", "prior is for a conditioned language model read as a classifier; "
                                                     f"model {entry.name!r} is a classifier")
        else:
            predictions = await batchers[entry.name].predict(texts, min(request.top_k, len(entry.model.labels)))
        return {"model": entry.name, "predictions": [p.as_json() for p in predictions]}

    @app.post("/v1/generate")
    def generate(request: GenerateRequest) -> dict:
        entry = served(request.model, generates, "a language model")
        within(len(request.prime), limits.max_chars, "the length of the prime", "max_chars")
        length = request.length
        if length is None:
            length = min(limits.max_generate_length, 500 if entry.model.kind == "text" else entry.model.max_length)
        within(length, limits.max_generate_length, "length", "max_generate_length")
        within(request.num_samples, limits.max_samples, "num_samples", "max_samples")
        samples = run(lambda: entry.model.generate(request.prime, length, float(request.temperature), request.top_k,
                                                   None if request.top_p is None else float(request.top_p),
                                                   request.num_samples, request.seed, request.condition,
                                                   float(request.guidance)))
        return {"model": entry.name, "samples": samples}

    @app.post("/v1/inspect")
    def inspect(request: InspectRequest) -> dict:
        entry = served(request.model, any_model, "a model")
        within(len(request.text), limits.max_chars, "the length of the text", "max_chars")
        if isinstance(entry.model, Classifier):
            if request.condition is not None:
                raise RequestError(422, "invalid_input", "condition is for conditioned language models")
            inspection = run(lambda: entry.model.inspect(request.text))
        else:
            inspection = run(lambda: entry.model.inspect(request.text, request.condition))
        return {"model": entry.name, "task": inspection.task, "characters": inspection.characters,
                "labels": inspection.labels, "probabilities": inspection.probabilities.round(5).tolist(),
                "top": [[{"label": label, "probability": p} for label, p in step] for step in inspection.top(5)],
                "hidden": inspection.hidden.round(4).tolist(),
                "most_active_units": inspection.most_active_units().tolist(),
                "unknown_characters": inspection.unknown_characters,
                "evidence": inspection.evidence and inspection.evidence.as_json()}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def icon() -> FileResponse:  # browsers and tools ask this address even when the page names its icon
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(InternalErrors)
    return app
