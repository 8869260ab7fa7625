#!/usr/bin/env python3
"""Writes the seed corpora (corpus/<target>/seed-*) from the spec's examples.

Run from fuzz/: python3 seeds.py. Dialect seeds hold one or more client
messages separated by 0xFF, as the dialect targets read them."""
import base64, hashlib, hmac, json, os, struct

SEP = b"\xff"


def write(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/seed-{name}", "wb") as f:
        f.write(data)


def msgs(*items):
    return SEP.join(m.encode() if isinstance(m, str) else m for m in items)


# 30-groups.md
group = {
    "msg-group": '{"msg_type":"msg","target":"group","msg":"hi","payload":{"a":1}}',
    "direct": '{"msg_type":"msg","target":"direct","to_id":"c_2","msg":"hi"}',
    "direct-missing-to": '{"msg_type":"msg","target":"direct"}',
    "broadcast": '{"msg_type":"cmd","target":"broadcast","cmd":"RELOAD_UI"}',
    "heartbeat": '{"msg_type":"heartbeat","target":"echo"}',
    "presence": '{"msg_type":"presence","target":"echo"}',
    "full": '{"version":"3","msg_type":"msg","target":"echo","from_id":"c_1","group_id":"g_1","msg":"x","sent_at":"2026-11-21T08:15:30.123Z"}',
    "unknown-field": '{"msg_type":"msg","target":"group","extra":1}',
    "legacy": '{"msg":"hello","anything":[1,2,3]}',
    "several": msgs('{"msg_type":"heartbeat","target":"echo"}', '{"msg_type":"presence","target":"group"}', 'not json'),
}
for name, text in group.items():
    write("dialect_group", name, text.encode() if isinstance(text, str) else text)

# 20-iot.md
iot = {
    "sub-property": '{"type":"up.sub","body":{"code":"devicePropertyReport","params":{"productID":"p","deviceName":"d","identifier":"temp"}},"handler":{"id":1}}',
    "sub-device": '{"type":"up.sub","body":{"code":"devicePublish","params":{"productID":"p","deviceName":"d"}}}',
    "sub-project": '{"type":"up.sub","body":{"code":"deviceConn","params":{"projectID":"p1"}}}',
    "sub-area": '{"type":"up.sub","body":{"code":"deviceOtaReport","params":{"projectID":"p1","areaID":"a1"}}}',
    "unsub": '{"type":"up.unSub","body":{"code":"deviceActionReport","params":{"productID":"p","deviceName":"d"}}}',
    "ping": '{"type":"up.ping","handler":{"k":"v"}}',
    "unknown": '{"type":"up.nope"}',
    "sub-then-unsub": msgs(
        '{"type":"up.sub","body":{"code":"devicePropertyReportV2","params":{"productID":"p","deviceName":"d","identifier":"i"}}}',
        '{"type":"up.unSub","body":{"code":"devicePropertyReportV2","params":{"productID":"p","deviceName":"d","identifier":"i"}}}',
    ),
}
for name, text in iot.items():
    write("dialect_iot", name, text.encode() if isinstance(text, str) else text)

# 10-jsonrpc.md
def rpc(method, params, id_='"1"'):
    return '{"jsonrpc":"2.0","method":"%s","params":%s,"id":%s}' % (method, json.dumps(params), id_)

jsonrpc = {
    "get": rpc("redis.get", {"key": "k"}),
    "set": rpc("redis.set", {"key": "k", "value": "v", "ttl": 60}, "7"),
    "del": rpc("redis.del", {"key": "k"}, "null"),
    "publish": rpc("redis.publish", {"channel": "ch", "message": {"a": [1]}}),
    "subscribe": msgs(rpc("subscribe", {"channel": "ch"}), rpc("unsubscribe", {"channel": "ch"}, "2")),
    "switch": rpc("hardwares.switchConvId", {"convId": "conv_1", "hdId": "hd_1"}),
    "status": rpc("device.status", {"status": "online", "battery": 80}),
    "notify": '{"jsonrpc":"2.0","method":"_notify","params":{"type":"tool.progress","data":{"id":"x"}}}',
    "result": '{"jsonrpc":"2.0","result":{"code":200,"data":{},"message":"ok"},"id":"call-1"}',
    "batch": "[" + rpc("redis.get", {"key": "a"}) + "," + rpc("redis.set", {"key": "a", "value": "b"}, "2") + "]",
    "ping": "ping",
}
for name, text in jsonrpc.items():
    write("dialect_jsonrpc", name, text.encode() if isinstance(text, str) else text)

# 40-im.md
session = "ab" * 16 + ".acme"
def im(id_, type_, body, to="bob", frm="alice"):
    return json.dumps({"id": id_, "type": type_, "isSystem": False, "from": frm, "to": to, "body": body})

register = im("m1", 1000, json.dumps({"sessionId": session}))
imseeds = {
    "register": register,
    "register-text": msgs(register, im("m2", 2001, "hello")),
    "register-notice": msgs(register, im("m3", 3001, json.dumps({"title": "t", "msg": "m", "serviceId": "s"}), to="bob,carol")),
    "register-target-notice": msgs(register, im("m4", 3003, json.dumps({"title": "t", "msg": "m", "target": "x"}))),
    "register-receipt": msgs(register, im("m5", 9101, json.dumps({"code": 200, "status": "SUCCESS", "msg": "ok"}))),
    "send-status": im("m6", 9001, json.dumps({"code": 200, "status": "SUCCESS", "msg": "ok"})),
    "unregistered": im("m7", 2001, "hi"),
}
for name, text in imseeds.items():
    write("dialect_im", name, text.encode() if isinstance(text, str) else text)

# 00-common.md "Frames": masked client frames.
def frame(fin, opcode, payload, mask=b"\x01\x02\x03\x04"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

frames = {
    "text": frame(True, 1, b'{"msg_type":"heartbeat","target":"echo"}'),
    "fragmented": frame(False, 1, b"hel") + frame(False, 0, b"lo ") + frame(True, 0, b"world"),
    "ping-between": frame(False, 1, b"ab") + frame(True, 9, b"p") + frame(True, 0, b"cd"),
    "close": frame(True, 8, struct.pack(">H", 1000) + b"bye"),
    "close-bad-code": frame(True, 8, struct.pack(">H", 1005)),
    "close-bad-utf8": frame(True, 8, struct.pack(">H", 1000) + b"\xce\xba\xe1\xbd"),
    "binary": frame(True, 2, b"\x00\x01"),
    "bad-utf8": frame(False, 1, b"\xc3") + frame(True, 0, b"\x28"),
    "pong": frame(True, 10, b""),
    "long": frame(True, 1, b"x" * 300),
    "continuation-alone": frame(True, 0, b"x"),
}
for name, data in frames.items():
    write("frames", name, data)

# JWT: shape byte 0 = token as is, 1 = claims signed, 2 = header 0xFF claims signed.
SECRET = b"fuzz-secret"
def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")
def signed(header, claims):
    msg = b64(header) + b"." + b64(claims)
    return msg + b"." + b64(hmac.new(SECRET, msg, hashlib.sha256).digest())
good = json.dumps({"sub": "alice", "tenant": "acme", "kind": "user", "exp": 4102444800, "iat": 4102400000,
                   "aud": "switchboard", "iss": "https://issuer.example"}).encode()
header = b'{"alg":"HS256","typ":"JWT"}'
jwt = {
    "token": b"\x00" + signed(header, good),
    "token-none": b"\x00" + b64(b'{"alg":"none"}') + b"." + b64(good) + b".",
    "claims": b"\x01" + good,
    "claims-aud-list": b"\x01" + json.dumps({"sub": "a", "exp": 4102444800, "aud": ["x", "switchboard"], "iss": "https://issuer.example"}).encode(),
    "claims-expired": b"\x01" + json.dumps({"sub": "a", "exp": 1}).encode(),
    "header-kid": b"\x02" + b'{"alg":"HS256","kid":"k1"}' + b"\xff" + good,
    "header-rs256": b"\x02" + b'{"alg":"RS256"}' + b"\xff" + good,
}
for name, data in jwt.items():
    write("jwt", name, data)

# Router envelopes: length-delimited EdgeFrames (proto/switchboard.proto).
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def field_varint(tag, n):
    return varint(tag << 3) + varint(n)
def field_bytes(tag, data):
    if isinstance(data, str):
        data = data.encode()
    return varint((tag << 3) | 2) + varint(len(data)) + data
def topic(tenant, kind, name):
    return field_bytes(1, tenant) + field_varint(2, kind) + field_bytes(3, name)
def edge(tag, body):
    msg = field_bytes(tag, body)
    return varint(len(msg)) + msg

opened = edge(1, field_varint(1, 1) + field_bytes(2, "t") + field_bytes(3, "c1") + field_varint(5, 1))
closed = edge(2, field_varint(1, 1))
sub = edge(3, field_varint(1, 1) + field_bytes(2, topic("t", 1, "g")) + field_bytes(3, "alice"))
unsub = edge(4, field_varint(1, 1) + field_bytes(2, topic("t", 1, "g")) + field_varint(3, 1))
publish_body = field_bytes(1, topic("t", 1, "g")) + field_bytes(2, field_bytes(1, b'{"a":1}')) + field_varint(3, 1)
publish = edge(5, publish_body)
touch = edge(6, field_varint(1, 1) + field_bytes(2, topic("t", 1, "g")))
presence = edge(7, field_varint(1, 9) + field_bytes(3, field_bytes(1, topic("t", 1, "g"))))
collect = edge(7, field_varint(1, 10) + field_bytes(4, field_bytes(1, topic("t", 1, "g"))))
req_publish = edge(7, field_varint(1, 11) + field_bytes(2, publish_body))
router = {
    "open-sub-close": opened + sub + closed,
    "open-sub-touch-unsub": opened + sub + touch + unsub,
    "publish": opened + sub + publish + closed,
    "requests": opened + sub + presence + collect + req_publish,
    "foreign-tenant": opened + edge(3, field_varint(1, 1) + field_bytes(2, topic("u", 1, "g"))),
    "im-open": edge(1, field_varint(1, 2) + field_varint(5, 5)) + edge(3, field_varint(1, 2) + field_bytes(2, topic("v", 2, "bob"))),
}
for name, data in router.items():
    write("router_envelope", name, data)
