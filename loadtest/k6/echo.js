// Echo round trip: each socket sends RATE messages a second with
// `target: echo` (the edge answers the sending socket only) and times
// each answer.
//   k6 run -e SECRET=… -e TARGET=ws://127.0.0.1:8080 loadtest/k6/echo.js
import ws from 'k6/ws';
import { check } from 'k6';
import { Trend } from 'k6/metrics';
import { groupUrl, latencyMs, runId, stamped } from './lib.js';

const VUS = Number(__ENV.VUS || 50);
const RATE = Number(__ENV.RATE || 20);
const SECONDS = Number(__ENV.SECONDS || 10);

const roundTrip = new Trend('echo_latency', true);

export const options = {
  scenarios: {
    echo: { executor: 'per-vu-iterations', vus: VUS, iterations: 1, maxDuration: `${SECONDS + 30}s` },
  },
  thresholds: {
    echo_latency: ['p(99)<50'],
    checks: ['rate==1.0'],
  },
};

export function setup() {
  return { run: runId() };
}

export default function (data) {
  const res = ws.connect(groupUrl(`g${data.run}_${__VU % 20}`, `e${data.run}_${__VU}`), {}, (socket) => {
    socket.on('open', () => {
      socket.setInterval(() => socket.send(stamped('echo')), 1000 / RATE);
      socket.setTimeout(() => socket.close(), SECONDS * 1000);
    });
    socket.on('message', (data) => {
      const ms = latencyMs(data);
      if (ms !== null) roundTrip.add(ms);
    });
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}
