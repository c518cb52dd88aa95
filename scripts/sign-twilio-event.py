#!/usr/bin/env python3
"""Recompute the X-Twilio-Signature of an API Gateway (HTTP API, payload 2.0) event file.

    scripts/sign-twilio-event.py events/twiml.json [AUTH_TOKEN]

Signs https://<host header><rawPath>[?<rawQueryString>] plus the sorted form fields of the
(optionally base64) body with HMAC-SHA1, as Twilio does, and writes the header back into the
file. AUTH_TOKEN defaults to the documented test token in events/README.md. Standard library
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
    headers = event["headers"]
    host = headers.get("host") or event["requestContext"]["domainName"]
    url = "https://" + host + event["rawPath"]
    if event.get("rawQueryString"):
        url += "?" + event["rawQueryString"]
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
    event["headers"]["x-twilio-signature"] = signature(event, token)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(event, f, indent=2)
        f.write("\n")
    print(f"{path}: x-twilio-signature = {event['headers']['x-twilio-signature']}")


if __name__ == "__main__":
    main()
