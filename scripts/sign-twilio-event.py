#!/usr/bin/env python3
"""Recompute the X-Twilio-Signature of an API Gateway event file (HTTP API payload 2.0, or
REST API payload 1.0).

    scripts/sign-twilio-event.py events/twiml.json [AUTH_TOKEN]

Signs the URL Twilio called plus the sorted form fields of the (optionally base64) body with
HMAC-SHA1, as Twilio does, and writes the header back into the file. The URL is
https://<host header> followed by the path as the client sent it: `rawPath` (2.0; it keeps a
named stage and a custom domain's base path) or `requestContext.path` (1.0; `path` drops the
stage), then `?<rawQueryString>` when there is one (2.0 only). AUTH_TOKEN defaults to the documented test token in events/README.md. Standard library
only; the Rust tests check the result with the crate's own validator.
"""
import base64
import hashlib
import hmac
import json
import sys
from urllib.parse import parse_qsl

TEST_AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def signature(event, token):
    headers = {k.lower(): v for k, v in event["headers"].items()}
    host = headers.get("host") or event["requestContext"]["domainName"]
    if event.get("version") == "2.0":
        url = "https://" + host + event["rawPath"]
        if event.get("rawQueryString"):
            url += "?" + event["rawQueryString"]
    else:
        url = "https://" + host + event["requestContext"]["path"]
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    pairs = sorted(set(parse_qsl(raw.decode(), keep_blank_values=True)))
    to_sign = url + "".join(name + value for name, value in pairs)
    mac = hmac.new(token.encode(), to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def main():
    path = sys.argv[1]
    token = sys.argv[2] if len(sys.argv) > 2 else TEST_AUTH_TOKEN
    with open(path, encoding="utf-8") as f:
        event = json.load(f)
    name = "X-Twilio-Signature" if event.get("version") != "2.0" else "x-twilio-signature"
    event["headers"][name] = signature(event, token)
    if "multiValueHeaders" in event:
        event["multiValueHeaders"][name] = [event["headers"][name]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(event, f, indent=2)
        f.write("\n")
    print(f"{path}: {name} = {event['headers'][name]}")


if __name__ == "__main__":
    main()
