"""A tiny JSON-over-HTTP client (urllib only), as an API consumer would write it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Client", "Reply"]


@dataclass(frozen=True)
class Reply:
    """One response: status, headers (lower-case names) and the decoded JSON body."""

    status: int
    headers: dict[str, str]
    body: Any = field(repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Client:
    """JSON requests against ``base_url`` with the sample's caller headers.

    :param project: sent as ``X-Project-Id``.
    :param roles: sent as ``X-Roles``.
    :param system_scope: sent as ``OpenStack-System-Scope`` (``all``: a system-scoped caller).
    """

    def __init__(
        self,
        base_url: str,
        *,
        project: str | None = None,
        roles: str | None = None,
        system_scope: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if project is not None:
            self.headers["X-Project-Id"] = project
        if roles is not None:
            self.headers["X-Roles"] = roles
        if system_scope is not None:
            self.headers["OpenStack-System-Scope"] = system_scope

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Reply:
        """Send one request; HTTP errors are returned as replies, not raised."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = path if path.startswith("http") else self.base_url + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _reply(response.status, response.headers.items(), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return _reply(error.code, error.headers.items(), error.read())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Reply:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Reply:
        return self.request("DELETE", path)


def _reply(status: int, headers: Any, raw: bytes) -> Reply:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Reply(status, {k.lower(): v for k, v in headers}, body)
