// Group fan-out: SUBSCRIBERS sockets in one group, one publisher sending
// RATE messages a second; every member times each receipt.
//   k6 run -e SECRET=… -e TARGET=ws://127.0.0.1:8080 loadtest/k6/fanout.js
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { groupUrl, latencyMs, runId, stamped } from './lib.js';

const SUBSCRIBERS = Number(__ENV.SUBSCRIBERS || 200);
const RATE = Number(__ENV.RATE || 20);
const SECONDS = Number(__ENV.SECONDS || 10);
const SETTLE = Number(__ENV.SETTLE || 5);

const delivery = new Trend('delivery_latency', true);
const received = new Counter('deliveries');

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', vus: SUBSCRIBERS, iterations: 1, exec: 'subscriber', maxDuration: `${SETTLE + SECONDS + 30}s` },
    publisher: { executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'publisher', startTime: `${SETTLE}s`, maxDuration: `${SECONDS + 30}s` },
  },
  thresholds: {
    delivery_latency: ['p(99)<100'],
    checks: ['rate==1.0'],
  },
};

export function setup() {
  return { group: `g${runId()}` };
}

export function subscriber(data) {
  const res = ws.connect(groupUrl(data.group, `s${__VU}`), {}, (socket) => {
    socket.on('message', (data) => {
      const ms = latencyMs(data);
      if (ms !== null) {
        delivery.add(ms);
        received.add(1);
      }
    });
    socket.setTimeout(() => socket.close(), (SETTLE + SECONDS + 3) * 1000);
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}

export function publisher(data) {
  const res = ws.connect(groupUrl(data.group, 'publisher'), {}, (socket) => {
    socket.on('open', () => {
      let sent = 0;
      socket.setInterval(() => {
        if (sent < RATE * SECONDS) {
          socket.send(stamped('group'));
          sent += 1;
        }
      }, 1000 / RATE);
      socket.setTimeout(() => socket.close(), (SECONDS + 2) * 1000);
    });
  });
  check(res, { 'publisher upgraded (101)': (r) => r && r.status === 101 });
}
