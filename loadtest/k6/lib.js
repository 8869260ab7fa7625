// Shared helpers for the Switchboard k6 scripts: HS256 tokens minted in
// the script (the edge's SWITCHBOARD_JWT_SECRET), group URLs and stamped
// messages whose `t` (µs since the epoch) times each receipt.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';

export const TARGET = __ENV.TARGET || 'ws://127.0.0.1:8080';
export const SECRET = __ENV.SECRET || __ENV.SWITCHBOARD_JWT_SECRET || '';
export const TENANT = __ENV.TENANT || 'bench';

function b64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

// An HS256 token for `sub` (kind `client`), valid for a day.
export function token(sub, kind = 'client') {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub, kind, tenant: TENANT, iat: now, exp: now + 86400 }));
  const signature = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'binary');
  return `${header}.${claims}.${encoding.b64encode(signature, 'rawurl')}`;
}

export function groupUrl(group, client) {
  return `${TARGET}/v3/ws/group/${group}/client/${client}?token=${token(client)}`;
}

// A name for this run, made once in setup(): init code runs once per VU,
// so a time-based name made there would differ between VUs.
export function runId() {
  return __ENV.RUN || Date.now().toString(36);
}

export function nowMicros() {
  return Date.now() * 1000;
}

// A group-dialect message with the send time in its payload.
export function stamped(target, size = 128) {
  const pad = 'x'.repeat(Math.max(0, size - 60));
  return JSON.stringify({ msg_type: 'msg', target, payload: { t: nowMicros(), pad } });
}

// Milliseconds since the stamp of a received message, or null.
export function latencyMs(data) {
  const match = /"t":(\d+)/.exec(data);
  return match ? (nowMicros() - Number(match[1])) / 1000 : null;
}
