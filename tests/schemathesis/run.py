#!/usr/bin/env python3
"""Runs schemathesis against a real `stanna serve`: its served /openapi.json, stateful (create →
get / patch / rotate / delete through the document's links), every check, once with an API key
and once with a dashboard session; then asserts each run made at least MIN_REQUESTS requests,
got no 5xx, and passed every check (schema conformance, status codes, headers, and our
`no_secret_echoed`). Prints the status distribution of each run, counted by the gateway itself
(its `gateway_requests` metric).

    python3 tests/schemathesis/run.py [--stanna target/debug/stanna] [--max-examples 60]

Needs `st` (pip install schemathesis). Limits are raised so answers are not all 429.
"""

import argparse
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIN_REQUESTS = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def http(method, url, headers=None, body=None):
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def statuses(metrics_url):
    """The gateway's answers so far, by status: {status: count}."""
    _, _, body = http("GET", metrics_url)
    counts = {}
    for line in body.decode().splitlines():
        if not line.startswith("#") and "gateway_requests_total{" in line:
            status = re.search(r'status="(\d+)"', line)
            if status:
                counts[status.group(1)] = counts.get(status.group(1), 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def difference(after, before):
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stanna", default=os.path.join(ROOT, "target/debug/stanna"))
    parser.add_argument("--max-examples", type=int, default=200)
    args = parser.parse_args()
    args.stanna = os.path.abspath(args.stanna)

    work = tempfile.mkdtemp(prefix="stanna-st-")
    gateway, registry, metrics = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{gateway}"
    origin = f"http://localhost:{gateway}"
    session_secret = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STANNA_", "OTEL_"))}
    env.update({
        "STANNA_DATABASE_URL": f"sqlite://{work}/st.db?mode=rwc",
        "STANNA_GATEWAY_ADDR": f"127.0.0.1:{gateway}",
        "STANNA_REGISTRY_ADDR": f"127.0.0.1:{registry}",
        "STANNA_AUTH_CHECK_ADDR": f"127.0.0.1:{free_port()}",
        "STANNA_QUOTA_ADDR": f"127.0.0.1:{free_port()}",
        "STANNA_METRICS_ADDR": f"127.0.0.1:{metrics}",
        "STANNA_STATE_DIR": work,
        "STANNA_SESSION_SECRET": session_secret,
        "STANNA_PUBLIC_URL": origin,
        # Raised so the runs test the API, not the limits.
        "STANNA_RATE_LIMIT_BURST": "10000/60s",
        "STANNA_RATE_LIMIT_HOURLY": "10000/3600s",
        "STANNA_SESSION_RATE_LIMIT_BURST": "10000/60s",
        "STANNA_SESSION_RATE_LIMIT_HOURLY": "10000/3600s",
        "STANNA_UNAUTHENTICATED_RATE_LIMIT": "off",
        "STANNA_MAX_KEYS_PER_USER": "100000",
        "STANNA_ACCESS_LOG": "on",
        "STANNA_ARGON2_M_KIB": "64",
        "STANNA_ARGON2_T": "1",
        "STANNA_LOG_FORMAT": "text",
    })
    log = open(os.path.join(work, "stanna.log"), "w")
    server = subprocess.Popen([args.stanna, "serve"], env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    failures = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                if http("GET", f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                sys.exit("stanna serve did not get ready:\n" + open(log.name).read())
            time.sleep(0.2)

        # A dashboard session, as a user signing in gets one.
        link = subprocess.run(
            [args.stanna, "session-link", "--workspace", "ws_st", "--user", "alice"],
            env=env, cwd=work, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        token = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0]
        status, headers, _ = http(
            "POST", f"{base}/settings/api-keys/session",
            {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin},
            urllib.parse.urlencode({"token": token}).encode(),
        )
        assert status == 303, f"sign-in answered {status}"
        cookie = headers["set-cookie"].split(";")[0]
        _, _, me = http("GET", f"{base}/v1/me", {"Cookie": cookie})
        csrf = json.loads(me)["csrfToken"]
        # An API key of the same user, made with the session.
        status, _, created = http(
            "POST", f"{base}/v1/keys",
            {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": origin, "Content-Type": "application/json"},
            json.dumps({"name": "schemathesis"}).encode(),
        )
        assert status == 201, f"creating the run's key answered {status}: {created!r}"
        key = json.loads(created)["secret"]

        runs = [
            # The workspace is the caller's own, as a careful client sends it (a random one is
            # a 403 workspace_mismatch, tested elsewhere).
            ("API key", ["-H", f"Authorization: Bearer {key}", "-H", "X-Workspace-Id: ws_st"], key),
            # As the dashboard calls: the CSRF token from /v1/me (not a secret: /v1/me returns it
            # by design), its origin, JSON on every call that changes something.
            ("dashboard session", [
                "-H", f"Cookie: {cookie}", "-H", f"X-CSRF-Token: {csrf}", "-H", f"Origin: {origin}",
                "-H", "Content-Type: application/json", "-H", "X-Workspace-Id: ws_st",
            ], cookie.split("=", 1)[1]),
        ]
        for name, auth, own in runs:
            before = statuses(f"http://127.0.0.1:{metrics}/metrics")
            started = time.time()
            st_env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", STANNA_ST_SECRETS=own,
                          PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
            command = [
                "st", "run", f"{base}/openapi.json", "--checks", "all",
                "--phases", "examples,coverage,fuzzing,stateful",
                "--max-examples", str(args.max_examples), "--seed", "20261202",
                "--request-timeout", "10", "--no-color", "--suppress-health-check", "all",
                # The credential is ours (-H): generated X-API-Key values would only collide with it.
                "--generation-with-security-parameters", "false",
                *auth,
            ]
            result = subprocess.run(command, env=st_env, capture_output=True, text=True)
            after = statuses(f"http://127.0.0.1:{metrics}/metrics")
            counts = difference(after, before)
            total = sum(counts.values())
            errors = sum(v for k, v in counts.items() if k.startswith("5"))
            print(f"--- {name}: {total} requests in {time.time() - started:.0f} s, by status: {json.dumps(counts)}")
            summary = result.stdout.strip().splitlines()
            print("\n".join(summary[-25:]))
            if result.returncode != 0:
                failures.append(f"{name}: schemathesis failed (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
            if total < MIN_REQUESTS:
                failures.append(f"{name}: only {total} requests (at least {MIN_REQUESTS} wanted)")
            if errors:
                failures.append(f"{name}: {errors} server errors")
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    if failures:
        print("\n".join(failures), file=sys.stderr)
        print("stanna's log: " + log.name, file=sys.stderr)
        sys.exit(1)
    print("schemathesis: both runs passed")


if __name__ == "__main__":
    main()
