"""A LiveKit server that already runs elsewhere: livekit-server you started, or LiveKit Cloud.

nbagents starts nothing here; ``start()`` checks, quickly, that the URL answers and accepts the key and
secret, so that a typo shows up as a clear error at once rather than as a hung or refused room connect.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

from nbagents.engines.base import Credentials, Engine, EngineError

URL_ENV, KEY_ENV, SECRET_ENV = "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"
_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def http_url(url: str) -> str:
    """The HTTP(S) base URL for the server's service API, from a ws(s):// or http(s):// URL."""
    parsed = urllib.parse.urlsplit(url.strip())
    scheme = _HTTP_SCHEME.get(parsed.scheme.lower())
    if scheme is None or not parsed.hostname:
        raise EngineError(
            f"{url!r} is not a LiveKit server URL: expected ws://host:port or wss://host "
            f"(for example ws://127.0.0.1:7880 or wss://my-project.livekit.cloud)"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise EngineError(f"{url!r} has an invalid port") from None
    return urllib.parse.urlunsplit((scheme, parsed.netloc, parsed.path.rstrip("/"), "", ""))


class RemoteEngine(Engine):
    """Uses the server at ``url`` (default: LIVEKIT_URL) with the given key and secret (default: env)."""

    name = "remote"

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.url = url if url is not None else os.environ.get(URL_ENV, "")
        self.api_key = api_key if api_key is not None else os.environ.get(KEY_ENV, "")
        self.api_secret = api_secret if api_secret is not None else os.environ.get(SECRET_ENV, "")
        self.timeout = timeout
        self._credentials: Credentials | None = None

    def describe(self) -> str:
        return f"remote LiveKit server at {self.url or '(no URL)'}"

    def start(self) -> Credentials:
        missing = [
            env for env, value in ((URL_ENV, self.url), (KEY_ENV, self.api_key), (SECRET_ENV, self.api_secret))
            if not value
        ]
        if missing:
            raise EngineError(
                f"the remote engine needs {', '.join(missing)}: set {'them' if len(missing) > 1 else 'it'} "
                "(LiveKit Cloud shows all three in its project settings), or unset NBAGENTS_ENGINE and "
                f"{URL_ENV} to use a local engine"
            )
        self._check_server(http_url(self.url))
        self._credentials = Credentials(self.url, self.api_key, self.api_secret)
        return self._credentials

    def stop(self) -> None:
        self._credentials = None

    def probe(self) -> None:
        """A TCP connect to the server (one round trip, no TLS, no API call): is anything listening there?

        Run before every launch after the first (``EngineSession``); a server that went away gives an
        :class:`EngineError` saying so and what to do, instead of a refused connection inside the job.
        """
        parsed = urllib.parse.urlsplit(http_url(self.url))
        host = parsed.hostname or ""
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=self.timeout):
                return
        except (socket.timeout, TimeoutError):
            problem = f"it did not answer within {self.timeout:g} s"
        except ConnectionRefusedError:
            problem = f"nothing listens on {host}:{port} any more (connection refused)"
        except socket.gaierror:
            problem = f"the host name {host!r} does not resolve"
        except OSError as exc:
            problem = exc.strerror or str(exc)
        raise EngineError(
            f"the remote LiveKit server at {self.url} ({URL_ENV}) is unreachable: {problem}. nbagents does not "
            f"run that server: start it again (or correct {URL_ENV}), or unset {URL_ENV} to let nbagents run "
            "a local one"
        )

    def _check_server(self, base: str) -> None:
        """One ListRooms call: proves the server is reachable, speaks LiveKit, and accepts our credentials."""
        from livekit import api

        token = api.AccessToken(self.api_key, self.api_secret).with_grants(api.VideoGrants(room_list=True))
        request = urllib.request.Request(
            f"{base}/twirp/livekit.RoomService/ListRooms",
            data=b"",  # an empty ListRoomsRequest
            headers={"Authorization": f"Bearer {token.to_jwt()}", "Content-Type": "application/protobuf"},
            method="POST",
        )
        # Like the livekit SDKs, talk to the server directly, not through proxies from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        where = f"the LiveKit server at {self.url}"
        try:
            with opener.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = _twirp_message(exc)
            if exc.code in (401, 403):
                raise EngineError(
                    f"{where} rejected the API key/secret ({detail}): check {KEY_ENV} and {SECRET_ENV} "
                    f"(API key {self.api_key!r})"
                ) from None
            if exc.code == 404:
                raise EngineError(
                    f"{self.url} answered, but has no LiveKit service API ({detail}): is {URL_ENV} the URL "
                    "of a LiveKit server?"
                ) from None
            raise EngineError(f"{where} answered HTTP {exc.code} ({detail}) to a ListRooms request") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, (socket.timeout, TimeoutError)):
                problem = f"did not answer within {self.timeout:g} s"
            elif isinstance(reason, ConnectionRefusedError):
                problem = "refused the connection (nothing listens there)"
            elif isinstance(reason, socket.gaierror):
                problem = "has a host name that does not resolve"
            else:
                problem = f"could not be reached ({reason})"
            raise EngineError(f"{where} {problem}: is it running, and is {URL_ENV} right?") from None


def _twirp_message(error: urllib.error.HTTPError) -> str:
    """The message of a Twirp JSON error body, or the HTTP reason when the body is something else."""
    try:
        text = error.read().decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    try:
        body = json.loads(text)
        return f"{body.get('code', 'error')}: {body.get('msg', '')}".rstrip(": ")
    except (ValueError, AttributeError):
        first_line = text.splitlines()[0][:200] if text else ""
        return f"HTTP {error.code} {error.reason}" + (f": {first_line}" if first_line else "")
