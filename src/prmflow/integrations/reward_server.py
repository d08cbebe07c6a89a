"""`prmflow reward-server`: OpenRLHF's remote reward endpoint (POST /get_reward, openrlhf.py's payload), GET /health.

Plain ASGI under uvicorn, with the scoring server's rules for what a client may send (serving/http_guard.py):

- every refusal is a short JSON body `{"error": "<field>: <rule>"}`, 4xx, never a 500 with a traceback: a body
  that is not JSON, not an object, nested 100,000 deep (400), over MAX_BODY_BYTES (413), of another content type
  than `application/json` (415: a page in a browser can post `text/plain` anywhere without asking);
- bytes that are not UTF-8 inside one query fail that query alone (it gets `unscorable_reward`, `prm_unscorable: 1`,
  and a warning with its index in the log), as a lone surrogate (`\\ud800`) does: its batch-mates get their rewards;
- no `/docs` or `/openapi.json`; `Transfer-Encoding` with `Content-Length` is refused (request smuggling);
- loopback by default; the `Host` header must name the address served (a loopback name on loopback), so a web page
  that rebinds its own name to 127.0.0.1 cannot reach it; bound to another address, the names clients use go in
  `--allow-host` (an all-interfaces bind without one is refused at start);
- with a token (`--token`, or the PRMFLOW_REWARD_TOKEN environment variable, which `ps` does not show), every
  request but `GET /health` must carry it, as `Authorization: Bearer TOKEN` or as the password of Basic
  credentials (`http://prm:TOKEN@host:5002/get_reward`: what OpenRLHF's remote reward client, which sends no
  headers of its own, sends for such a URL); 401 otherwise. A Host check keeps out web pages, not other machines:
  off loopback, a server without a token says so at start;
- a PRM that keeps failing is a 502 naming its endpoint; no credential (`user:password@` in `--endpoint`) is
  printed, answered or logged: it is shown as `***`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import logging

from prmflow.integrations.client import PRMClient, RewardConfig, RewardError
from prmflow.integrations.openrlhf import check_payload, reward_payload
from prmflow.http_retry import scrubbed
from prmflow.serving.requests import body_text, parse_json

MAX_BODY_BYTES = 64_000_000  # 1,024 queries of 60,000 characters; OpenRLHF sends one micro-batch per request
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_ENV = "PRMFLOW_REWARD_TOKEN"
log = logging.getLogger("prmflow.rewards")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def allowed_hosts(host: str, allow: list[str]) -> frozenset[str]:
    """The Host names a request may carry when the server is bound to `host`; raises ValueError for a bind to
    every interface (0.0.0.0, ::) with no `allow` names."""
    names = {name.lower().strip("[]") for name in allow}
    if is_loopback(host):
        return frozenset(names | LOOPBACK_NAMES | {host.strip("[]")})
    if host in ("0.0.0.0", "::", ""):
        if not names:
            raise ValueError(f"--host {host or '(all)'}: bound to every interface, name the host names clients use "
                             f"in --allow-host (a Host check keeps web pages out)")
        return frozenset(names)
    return frozenset(names | {host.lower().strip("[]")})


def host_name(value: bytes) -> str:
    """The name in a Host header, without its port: `127.0.0.1:5002` -> `127.0.0.1`, `[::1]:5002` -> `::1`."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def presented_token(value: bytes) -> str:
    """The token an Authorization header carries ("" for none): `Bearer TOKEN`, or Basic credentials whose password
    is the token (what requests, and so OpenRLHF, sends for a URL `http://prm:TOKEN@host:port/...`)."""
    scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[2]
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
            return ""
    return ""


async def _send(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RewardApp:
    """The ASGI app (module docstring): `client` scores, `hosts` are the Host names answered, `token` (when not
    empty) is the one every request but `GET /health` must carry."""

    def __init__(self, client: PRMClient, hosts: frozenset[str], token: str = ""):
        self.client, self.hosts, self.token = client, hosts, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        status, payload = await self._answer(scope, receive)
        if status:
            await _send(send, status, payload)

    async def _answer(self, scope, receive) -> tuple[int, dict]:
        headers = {name.lower(): value for name, value in scope.get("headers", ())}
        if b"transfer-encoding" in headers and b"content-length" in headers:
            return 400, {"error": "request headers: both Transfer-Encoding and Content-Length; send one"}
        if host_name(headers.get(b"host", b"")) not in self.hosts:
            return 421, {"error": "Host: not a name this server answers (see prmflow reward-server --allow-host)"}
        route = (scope["method"], scope["path"])
        if route == ("GET", "/health"):
            return 200, {"status": "ok", "prm": self.client.config.source}
        if self.token and not hmac.compare_digest(presented_token(headers.get(b"authorization", b"")).encode(),
                                                  self.token):
            return 401, {"error": "Authorization: no valid token; send `Authorization: Bearer TOKEN` (see prmflow "
                                  "reward-server --token)"}
        if scope["path"] not in ("/get_reward", "/health"):
            return 404, {"error": "no such path; POST /get_reward or GET /health"}
        if route != ("POST", "/get_reward"):
            return 405, {"error": f"{scope['method'][:10]} {scope['path']}: POST /get_reward or GET /health"}
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0, {}
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                return 413, {"error": f"request body: more than {MAX_BODY_BYTES} bytes; send fewer queries"}
            if not message.get("more_body"):
                break
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type != "application/json":
            return 415, {"error": f"Content-Type: must be application/json, got {content_type[:40]!r}"}
        try:
            queries, prompts = check_payload(parse_json(body_text(b"".join(chunks)), "request body"))
            return 200, await asyncio.to_thread(reward_payload, self.client, queries, prompts)
        except ValueError as error:  # RequestError too
            return 400, {"error": scrubbed(str(error))[:900]}
        except RewardError as error:
            return 502, {"error": scrubbed(str(error))[:900]}
        except Exception:
            log.exception("scoring failed")
            return 500, {"error": "the reward server failed on this request; its log has the error"}


def reward_app(config: RewardConfig, host: str = "127.0.0.1", allow: list[str] | None = None,
               token: str = "") -> RewardApp:
    """The app for a server bound to `host`; raises ValueError as allowed_hosts does."""
    return RewardApp(PRMClient(config), allowed_hosts(host, allow or []), token)


def serve(config: RewardConfig, host: str, port: int, allow: list[str] | None = None, token: str = "") -> None:
    import uvicorn

    uvicorn.run(reward_app(config, host, allow, token), host=host, port=port, log_level="warning", lifespan="off")
