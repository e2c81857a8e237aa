"""Uploading a submission file to a scoring server: the client behind ``fgvc submit``.

The file is read and checked as :mod:`.submission` checks it before anything is sent; it is sent with an
Idempotency-Key (its SHA-256) so a retried POST whose reply was lost is not counted twice; connection
errors, timeouts and HTTP 5xx are retried with backoff; a refusal is one line quoting the server.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .submission import SubmissionError, read_submission_to_send

__all__ = ["TOKEN_ENV", "SubmitResult", "idempotency_key", "submit_submission"]

log = logging.getLogger(__name__)

_REPLY_QUOTE_CHARS = 300
_SERVER_MESSAGE_CHARS = 2000  # a server's own message names its first problems; keep all of it
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")
TOKEN_ENV = "FGVC_TOKEN"
"""Environment variable `fgvc submit` reads the team token from when --token is not given."""


# -- upload -------------------------------------------------------------------------------------------
@dataclass
class SubmitResult:
    """What the server said: its accuracy, the full JSON reply, and how many POSTs it took."""

    accuracy: float
    attempts: int
    reply: dict

    def summary_lines(self) -> list[str]:
        """What `fgvc submit` prints: the accuracy, then what ``fgvc server`` adds (id, rank, quota)."""
        reply = self.reply
        lines = [f"accuracy is {self.accuracy} (server reply after {self.attempts} attempt(s))"]
        if "submission_id" in reply:
            rank = reply.get("rank")
            ranked = f", rank {rank} of {reply['teams_ranked']} team(s)" if rank and reply.get("teams_ranked") else ""
            score = reply.get("public_score")
            shown = f"{score:.2%}" if isinstance(score, (int, float)) else "not scored yet"
            lines.append(f"submission {reply['submission_id']}: public score {shown}{ranked}")
        if reply.get("replayed"):
            lines.append("the server had already received this exact file from your team; this is the first reply "
                         "again and no quota was used")
        left, limit = reply.get("quota_left_today"), reply.get("daily_limit")
        if isinstance(left, int) and isinstance(limit, int) and limit > 0:
            resets = f" (the quota resets at {reply['quota_resets_at']})" if reply.get("quota_resets_at") else ""
            lines.append(f"{left} of {limit} submission(s) left today{resets}")
        return lines


def idempotency_key(body: bytes) -> str:
    """The Idempotency-Key `fgvc submit` sends: the file's SHA-256.

    The server keeps keys per team (the team is the token's, or the file's groupname), so a retry of a
    POST whose reply was lost returns the first result instead of counting the file twice.
    """
    return "sha256-" + hashlib.sha256(body).hexdigest()


def _quote_reply(raw: bytes, charset: str | None) -> str:
    """The first few hundred characters of a reply, HTML tags stripped, for an error message."""
    try:
        text = raw.decode(charset or "utf-8", errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    text = " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split())
    if not text:
        return "(empty reply)"
    return repr(text if len(text) <= _REPLY_QUOTE_CHARS else text[:_REPLY_QUOTE_CHARS] + "...")


def _reply_message(raw: bytes, charset: str | None) -> str | None:
    """The human-readable 'message' of a JSON error reply (``fgvc server`` sends one with every reply)."""
    try:
        reply = json.loads(raw.decode(charset or "utf-8"))
    except (ValueError, LookupError):
        return None
    message = reply.get("message") if isinstance(reply, dict) else None
    if not isinstance(message, str) or not message.strip():
        return None
    return message if len(message) <= _SERVER_MESSAGE_CHARS else message[:_SERVER_MESSAGE_CHARS] + "..."


def _accuracy_reply(raw: bytes, charset: str | None) -> dict | None:
    """The reply as a dict if it is JSON with a numeric 'accuracy', else None."""
    try:
        reply = json.loads(raw.decode(charset or "utf-8"))
    except (ValueError, LookupError):
        return None
    accuracy = reply.get("accuracy") if isinstance(reply, dict) else None
    ok = isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
    return reply if ok else None


def _connection_failure(error: BaseException, timeout: float) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"no reply within {timeout:g}s"
    return f"{type(reason).__name__}: {reason}"


def _refusal(url: str, error: urllib.error.HTTPError, still_there: str) -> SubmissionError:
    """The error for a 4xx reply: the server's own message when it sent one, with what to do."""
    raw = error.read() if error.fp else b""
    charset = error.headers.get_content_charset() if error.headers else None
    message = _reply_message(raw, charset)
    if message is None:
        return SubmissionError(
            f"{url} rejected the submission with HTTP {error.code} {error.reason}: {_quote_reply(raw, charset)}. "
            f"Not retried: a 4xx reply means the request itself is wrong (check --url). {still_there}"
        )
    message = message.rstrip()
    if not message.endswith((".", "!", "?")):
        message += "."
    if error.code == 401:
        message += f" Pass your team's token with --token, or set {TOKEN_ENV} in the environment."
    return SubmissionError(f"{url} refused the submission (HTTP {error.code}): {message} "
                           f"Not retried: the same request would be refused again. {still_there}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: urllib would copy the Authorization header to any host the server names, and
    turn the POST into a GET whose reply could look like a score. The 3xx reaches the caller as an HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # urllib calls it with these arguments
        return None


def _redirect_refusal(url: str, error: urllib.error.HTTPError, still_there: str) -> SubmissionError:
    """A 3xx reply to the POST: nothing was delivered; name where the server points, without going there."""
    location = error.headers.get("Location") if error.headers else None
    target = f"to {urljoin(url, location)!r}" if location else "without a Location"
    advice = ("if that is the scoring server's address, pass it as --url (the token is never sent to an address "
              "you did not give)" if location else "check --url")
    return SubmissionError(f"{url} answered HTTP {error.code} (a redirect) {target}; the submission was not "
                           f"delivered or scored and was not sent on: {advice}. {still_there}")


def submit_submission(
    path: str | os.PathLike,
    url: str,
    *,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    token: str | None = None,
) -> SubmitResult:
    """POST a saved submission file to the scoring server, exactly as it is on disk.

    Connection errors, timeouts and HTTP 5xx are retried ``retries`` times, waiting
    ``backoff * 2**i`` seconds after the i-th failure; 4xx and non-JSON replies are not (the same
    request would fail the same way). A redirect is an error naming the new address: it is never followed,
    so the token goes only to ``url``, and success is only ever a 2xx reply carrying a score. The file is
    never modified, so it can always be resent.
    Every attempt carries the same Idempotency-Key (the file's hash), so a server that stored an
    attempt whose reply was lost answers the retry with the first result instead of counting it
    twice. ``token`` is sent as ``Authorization: Bearer <token>`` (``fgvc server``'s team token).
    """
    path = Path(path)
    body = read_submission_to_send(path, with_token=bool(token))
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise SubmissionError(f"--url must be the scoring server's address, starting with http:// or https://, "
                              f"got {url!r}")
    if retries < 0:
        raise SubmissionError(f"--retries must be 0 or more, got {retries}")
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "Idempotency-Key": idempotency_key(body)}
    if token is not None:
        token = token.strip()
        if not token or not _TOKEN_CHARS.fullmatch(token):
            raise SubmissionError(f"--token (or {TOKEN_ENV}) must be the team token `fgvc server team add` printed: "
                                  "one word of letters, digits and -_.~+/= characters")
        headers["Authorization"] = f"Bearer {token}"

    resend = f"fgvc submit {path} --url {url}" + (" --token TOKEN" if token is not None else "")  # never the secret
    still_there = f"The submission is unchanged at {path}; send it again with `{resend}` once the problem is fixed."
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    # built per call so proxy settings are read now, not at import; redirects are never followed
    opener = urllib.request.build_opener(_NoRedirect)
    attempts = retries + 1
    failure = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            delay = backoff * 2 ** (attempt - 2)
            log.warning("submission attempt %d/%d failed (%s); retrying in %gs", attempt - 1, attempts, failure, delay)
            sleep(delay)
        try:
            with opener.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
                charset = response.headers.get_content_charset()
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                raise _redirect_refusal(url, e, still_there) from None
            if 500 <= e.code < 600:
                raw = e.read() if e.fp else b""
                charset = e.headers.get_content_charset() if e.headers else None
                message = _reply_message(raw, charset)
                failure = f"HTTP {e.code} {e.reason}: {repr(message) if message else _quote_reply(raw, charset)}"
                continue
            raise _refusal(url, e, still_there) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            failure = _connection_failure(e, timeout)
            continue
        reply = _accuracy_reply(raw, charset)
        if reply is None:
            raise SubmissionError(
                f"{url} answered HTTP {status} without a JSON {{\"accuracy\": <number>}}, so the submission was "
                f"not scored. The reply was: {_quote_reply(raw, charset)}. {still_there}"
            )
        return SubmitResult(accuracy=float(reply["accuracy"]), attempts=attempt, reply=reply)
    raise SubmissionError(
        f"gave up after {attempts} attempt(s) to POST to {url}; last failure: {failure}. Check --url and that "
        f"the server is up (--retries sets how often to retry). {still_there}"
    )
