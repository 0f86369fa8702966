"""Micro-batching: the texts of concurrent /v1/predict requests are classified in one model call.

A single surname costs the classifier almost as much as sixteen (the per-call overhead dominates), so
under load the service answers requests in groups: whatever arrived while the model was busy goes into
the next call, with no waiting added when the service is idle.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

from starlette.concurrency import run_in_threadpool

from elman.inference import Classifier, Prediction


class PredictionBatcher:
    def __init__(self, classifier: Classifier, lock: threading.Lock, max_texts: int = 512):
        self.classifier, self.lock, self.max_texts = classifier, lock, max_texts
        self.waiting: list[tuple[list[str], int, asyncio.Future]] = []
        self.draining = False

    async def predict(self, texts: list[str], top_k: int) -> list[Prediction]:
        """Like ``Classifier.predict`` for texts that ``Classifier.clean`` already accepted."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((texts, top_k, future))
        if not self.draining:
            self.draining = True
            asyncio.create_task(self.drain())
        return await future

    async def drain(self) -> None:
        try:
            while self.waiting:
                group, count = [], 0
                while self.waiting and (not group or count + len(self.waiting[0][0]) <= self.max_texts):
                    group.append(self.waiting.pop(0))
                    count += len(group[-1][0])
                texts = [text for request_texts, _, _ in group for text in request_texts]
                top_k = max(k for _, k, _ in group)
                try:
                    predictions = await run_in_threadpool(self._locked_predict, texts, top_k)
                except Exception as error:  # noqa: BLE001 - handed to every waiting request, never lost
                    for _, _, future in group:
                        future.set_exception(error)
                    continue
                start = 0
                for request_texts, k, future in group:
                    mine = predictions[start : start + len(request_texts)]
                    start += len(request_texts)
                    future.set_result([replace(p, labels=p.labels[:k]) for p in mine])
        finally:
            self.draining = False

    def _locked_predict(self, texts: list[str], top_k: int) -> list[Prediction]:
        with self.lock:
            return self.classifier.predict(texts, top_k=top_k)
