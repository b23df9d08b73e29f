"""Schemathesis hooks of the Stanna Keys runs (loaded through SCHEMATHESIS_HOOKS).

`no_secret_echoed`: a key's plaintext exists only in the answer of `create_key` and `rotate_key`.
Every other answer — errors included — must carry no API key and no session credential: not the
caller's own (STANNA_ST_SECRETS, `|`-separated), and nothing key-shaped at all.
"""

import datetime
import os
import re

import schemathesis

KEY = re.compile(r"sk-[0-9A-Za-z]{50}")
SECRETS = [s for s in os.environ.get("STANNA_ST_SECRETS", "").split("|") if s]
MINTING = {"create_key", "rotate_key"}


@schemathesis.check
def no_secret_echoed(ctx, response, case):
    text = response.text or ""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for secret in SECRETS:
        if secret in text or secret in headers:
            raise AssertionError("the answer repeats the caller's own credential")
    operation = getattr(case.operation.definition, "raw", {}) or {}
    operation_id = operation.get("operationId") if isinstance(operation, dict) else None
    minted = operation_id in MINTING and response.status_code in (200, 201)
    found = KEY.findall(text) + KEY.findall(headers)
    if minted:
        if len(set(found)) > 1:
            raise AssertionError("a new key's answer carries more than its one secret")
    elif found:
        raise AssertionError(f"{operation_id}: the answer carries a key's plaintext")
    return None


# Rules the document states in words but a schema cannot: a page token is one a previous answer
# of the same route gave, for the same filters (any other is a 400, which the fuzz target
# `page_token` and the search tests cover), and an expiry is in the future (a past one is a 400,
# tested in the REST tests). Generated values that break them are replaced by ones that keep
# them, so "schema-valid request rejected" means what it says.
FILTERS = {
    "/v1/keys": ("nameContains", "status", "unusedForDays"),
    # The audit listing binds whose events it lists; its time range applies to every page.
    "/v1/audit": ("keyId",),
}
PAGE_TOKENS = {path: [] for path in FILTERS}  # path → [(token, the filters it continues)]


def listing_filters(path, query):
    query = query if isinstance(query, dict) else {}
    return {name: query[name] for name in FILTERS[path] if name in query}


@schemathesis.hook
def after_call(context, case, response):
    path = case.path
    if path not in PAGE_TOKENS:
        return
    if response.status_code == 200 and "nextPageToken" in (response.text or ""):
        try:
            token = response.json().get("nextPageToken")
        except ValueError:
            return
        tokens = PAGE_TOKENS[path]
        if isinstance(token, str) and all(token != t for t, _ in tokens):
            tokens.append((token, listing_filters(path, case.query)))


@schemathesis.hook
def before_call(context, case, kwargs):
    query = case.query
    path = case.path
    if path in PAGE_TOKENS and isinstance(query, dict) and isinstance(query.get("pageToken"), str):
        tokens = PAGE_TOKENS[path]
        known = dict(tokens)
        if query["pageToken"] not in known:
            if tokens:
                query["pageToken"] = tokens[len(tokens) // 2][0]
            else:
                del query["pageToken"]
        if "pageToken" in query:
            for name in FILTERS[path]:
                query.pop(name, None)
            query.update(dict(tokens)[query["pageToken"]])
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("expiresAt"), str):
        try:
            at = datetime.datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
        except ValueError:
            return
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
        if at.tzinfo is not None and at < soon:
            body["expiresAt"] = (soon + datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
