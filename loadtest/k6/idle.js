// Idle sockets: VUS authenticated sockets ramped up over RAMP seconds and
// held for HOLD seconds with a heartbeat every 30 s; a socket the server
// closes early fails the check.
//   k6 run -e SECRET=… -e TARGET=ws://127.0.0.1:8080 loadtest/k6/idle.js
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { groupUrl, runId } from './lib.js';

const VUS = Number(__ENV.VUS || 1000);
const RAMP = Number(__ENV.RAMP || 10);
const HOLD = Number(__ENV.HOLD || 30);

const dropped = new Counter('dropped_sockets');

export const options = {
  scenarios: {
    idle: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [{ duration: `${RAMP}s`, target: VUS }, { duration: `${HOLD}s`, target: VUS }],
      gracefulRampDown: '5s',
    },
  },
  thresholds: {
    dropped_sockets: ['count==0'],
    checks: ['rate==1.0'],
  },
};

export function setup() {
  return { start: Date.now(), run: runId() };
}

export default function (data) {
  // Every socket is held until the end of the hold, whenever its VU started.
  const endAt = data.start + (RAMP + HOLD) * 1000;
  if (Date.now() >= endAt - 1000) {
    sleep(1);
    return;
  }
  let closedByUs = false;
  const res = ws.connect(groupUrl(`g${data.run}_${Math.floor(__VU / 50)}`, `i${data.run}_${__VU}`), {}, (socket) => {
    socket.setInterval(() => socket.send(JSON.stringify({ msg_type: 'heartbeat', target: 'echo' })), 30000);
    socket.setTimeout(() => {
      closedByUs = true;
      socket.close();
    }, endAt - Date.now());
    socket.on('close', () => {
      if (!closedByUs) dropped.add(1);
    });
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
  // A VU whose socket ended early sits out the rest instead of reconnecting.
  const left = (endAt - Date.now()) / 1000;
  if (left > 0) sleep(left);
}
