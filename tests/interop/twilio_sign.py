#!/usr/bin/env python3
"""X-Twilio-Signature computed by Twilio's own library (twilio-python's RequestValidator),
for tests that must not sign with the code they check.

    python3 tests/interop/twilio_sign.py AUTH_TOKEN URL [FORM_BODY]

Prints the signature of URL plus the form fields of FORM_BODY (application/x-www-form-
urlencoded; none for a WebSocket upgrade, which Twilio signs over the wss:// URL alone).
"""
import sys
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator


def main():
    token, url = sys.argv[1], sys.argv[2]
    body = sys.argv[3] if len(sys.argv) > 3 else ""
    params = dict(parse_qsl(body, keep_blank_values=True))
    print(RequestValidator(token).compute_signature(url, params))


if __name__ == "__main__":
    main()
