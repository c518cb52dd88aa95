"""An independent client: Python `websockets` plays a Twilio call against media-ws, with
stream tokens minted by PyJWT. Usage: twilio_call.py <ws-base-url> <shared-secret>.
Exits non-zero with a message on the first mismatch."""

import asyncio
import base64
import json
import sys
import time

import jwt
import websockets

SID = "MZ5f1c7e0b9a2d4c3e8f6a1b2c3d4e5f60"
CALL = "CAfedcba9876543210fedcba9876543210"


def fail(msg):
    print(f"interop: {msg}", file=sys.stderr)
    sys.exit(1)


async def call(base, secret):
    now = int(time.time())
    token = jwt.encode({"aud": "media", "iat": now, "exp": now + 60, "sub": CALL}, secret, algorithm="HS256")
    frames = [bytes((i * 7 + j) % 256 for j in range(160)) for i in range(25)]
    async with websockets.connect(f"{base}/jwt/{token}") as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": SID,
            "start": {"accountSid": "AC0123456789abcdef0123456789abcdef", "streamSid": SID, "callSid": CALL,
                      "tracks": ["inbound"], "customParameters": {},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        for i, frame in enumerate(frames):
            await ws.send(json.dumps({
                "event": "media", "sequenceNumber": str(i + 2), "streamSid": SID,
                "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i),
                          "payload": base64.b64encode(frame).decode()}}))
            await asyncio.sleep(0.02)
        got = b""
        while len(got) < 160 * len(frames):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if msg["event"] == "media":
                if set(msg) != {"event", "streamSid", "media"} or msg["streamSid"] != SID:
                    fail(f"media message shape {sorted(msg)}")
                got += base64.b64decode(msg["media"]["payload"])
            elif msg["event"] == "mark":
                await ws.send(json.dumps({"event": "mark", "streamSid": SID, "sequenceNumber": "99",
                                          "mark": msg["mark"]}))
        if got != b"".join(frames):
            fail("echo differs from what was sent")
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": "99", "streamSid": SID,
                                  "stop": {"accountSid": "AC0", "callSid": CALL}}))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != 1000:
                fail(f"close {closed.rcvd}")

    # alg=none and a wrong secret are refused at the handshake with 401.
    for bad in (jwt.encode({"aud": "media", "exp": now + 60}, None, algorithm="none"),
                jwt.encode({"aud": "media", "exp": now + 60}, "wrong-secret", algorithm="HS256")):
        try:
            async with websockets.connect(f"{base}/jwt/{bad}"):
                fail("a bad token was accepted")
        except websockets.InvalidStatus as e:
            if e.response.status_code != 401:
                fail(f"status {e.response.status_code}")
    print("interop: ok")


asyncio.run(call(sys.argv[1], sys.argv[2]))
