"""The JSON API under /api/ that the dashboard (and scripts) use: overview, queue search, one message,
retry and delete, DNS check results. Queue work goes through QueueAdmin on one thread of its own.

Authentication and CSRF are http.py's; this module only answers authenticated requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from postroom.admin.activity import Activity
from postroom.queue.admin import (
    AdminError,
    MessageView,
    QueueAdmin,
    Selection,
    StateFilter,
    open_queue_admin,
    parse_queue_id,
)

__all__ = ["Api", "QueueView"]

_T = TypeVar("_T")
_SEARCH_SCAN = 10_000  # messages looked at for one search, at most
_PAGE = 200  # messages returned, at most
_STATES = ("queued", "deferred", "held", "failed")


class QueueView:
    """A QueueAdmin on its own connection, used from one worker thread only (SQLite connections are not
    shared between threads that run at once); callers await ``run``."""

    def __init__(self, *, database_path: Path, queue_dir: Path, clock: Callable[[], float]) -> None:
        self._paths = (database_path, queue_dir)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postroom-admin")
        self._admin: QueueAdmin | None = None

    async def run(self, call: Callable[[QueueAdmin], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, call)

    async def run_plain(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` on the queue's thread (metrics scrapes read the queue through it)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def summary(self) -> tuple[int, float]:
        """Only on the queue's thread (see run_plain)."""
        return self._open().summary()

    def _call(self, call: Callable[[QueueAdmin], _T]) -> _T:
        return call(self._open())

    def _open(self) -> QueueAdmin:
        if self._admin is None:
            database_path, queue_dir = self._paths
            self._admin = open_queue_admin(
                database_path=database_path, queue_dir=queue_dir, clock=self._clock
            )
        return self._admin

    def close(self) -> None:
        def close_admin() -> None:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

        self._executor.submit(close_admin).result()
        self._executor.shutdown(wait=True)


def message_json(view: MessageView) -> dict[str, Any]:
    return dataclasses.asdict(view)


def _matches(view: MessageView, text: str) -> bool:
    """A case-insensitive substring of the queue id, the sender, a recipient or its last error."""
    fields = [view.queue_id, view.sender]
    for recipient in view.recipients:
        fields += [recipient.address, recipient.mailbox, recipient.last_error or ""]
    return any(text in field.lower() for field in fields)


def _search(admin: QueueAdmin, text: str, state: str | None) -> dict[str, Any]:
    selection = Selection(state=typing.cast(StateFilter, state)) if state in _STATES else Selection()
    found: list[dict[str, Any]] = []
    scanned = 0
    views = admin.messages(selection)
    try:
        for view in views:
            scanned += 1
            if not text or _matches(view, text):
                found.append(message_json(view))
            if len(found) >= _PAGE or scanned >= _SEARCH_SCAN:
                break
    finally:
        close = getattr(views, "close", None)  # a generator holds a read snapshot until closed
        if close is not None:
            close()
    return {"messages": found, "truncated": len(found) >= _PAGE or scanned >= _SEARCH_SCAN}


class Api:
    """The /api/ handlers."""

    def __init__(
        self,
        *,
        queue: QueueView,
        activity: Activity,
        checks: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self._queue = queue
        self._activity = activity
        self._checks = checks

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/overview", self.overview),
            web.get("/api/queue", self.queue),
            web.get("/api/queue/{queue_id}", self.message),
            web.post("/api/queue/{queue_id}/retry", self.retry),
            web.post("/api/queue/{queue_id}/delete", self.delete),
            web.get("/api/checks", self.checks),
        ]

    async def overview(self, request: web.Request) -> web.Response:
        count, oldest_age = await self._queue.run(lambda admin: admin.summary())
        return web.json_response(
            {
                "queue": {"messages": count, "oldest_age": oldest_age},
                "samples": self._activity.samples(),
                "deliveries": self._activity.deliveries(),
                "refusals": self._activity.refusals(),
            }
        )

    async def queue(self, request: web.Request) -> web.Response:
        text = request.query.get("q", "").strip().lower()
        state = request.query.get("state") or None
        if state is not None and state not in _STATES:
            raise _error(web.HTTPBadRequest, f"state must be one of {', '.join(_STATES)}")
        return web.json_response(await self._queue.run(lambda admin: _search(admin, text, state)))

    async def message(self, request: web.Request) -> web.Response:
        queue_id = _queue_id(request)
        view = await self._admin_call(lambda admin: admin.message(queue_id))
        return web.json_response(message_json(view))

    async def retry(self, request: web.Request) -> web.Response:
        queue_id = _queue_id(request)
        due = await self._admin_call(lambda admin: admin.retry(Selection(queue_ids=(queue_id,))))
        return web.json_response({"queue_id": queue_id, "retried": due})

    async def delete(self, request: web.Request) -> web.Response:
        queue_id = _queue_id(request)
        deleted = await self._admin_call(lambda admin: admin.delete(Selection(queue_ids=(queue_id,))))
        return web.json_response({"queue_id": queue_id, "deleted": deleted.messages})

    async def checks(self, request: web.Request) -> web.Response:
        if self._checks is None:
            return web.json_response({"available": False, "findings": []})
        return web.json_response({"available": True, "findings": await self._checks()})

    async def _admin_call(self, call: Callable[[QueueAdmin], _T]) -> _T:
        try:
            return await self._queue.run(call)
        except AdminError as exc:
            raise _error(web.HTTPNotFound, str(exc)) from None


def _queue_id(request: web.Request) -> str:
    try:
        return parse_queue_id(request.match_info["queue_id"])
    except AdminError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")
