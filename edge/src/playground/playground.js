// Switchboard playground: one tab per dialect, plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const wsScheme = location.protocol === "https:" ? "wss" : "ws";
const enc = encodeURIComponent;

// ---- tabs -------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll("[role=tab]").forEach((tab) => {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  });
  document.querySelectorAll(".tab").forEach((panel) => {
    panel.hidden = panel.id !== `tab-${name}`;
  });
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}
document.querySelectorAll("[role=tab]").forEach((tab) => {
  tab.onclick = () => showTab(tab.dataset.tab);
});
showTab(["group", "rpc", "iot", "im"].includes(location.hash.slice(1)) ? location.hash.slice(1) : "group");

// ---- shared: log, state, tokens, why a socket failed -------------------

function log(tab, kind, text) {
  const line = document.createElement("div");
  line.className = kind;
  line.textContent = (kind === "out" ? "→ " : kind === "in" ? "← " : "· ") + text;
  const box = $(`${tab}-log`);
  box.appendChild(line);
  box.scrollTop = box.scrollHeight;
}

function setState(tab, state, detail) {
  const badge = $(`${tab}-state`);
  badge.dataset.state = state;
  badge.textContent = detail ? `${state}: ${detail}` : state;
}

function explain(tab, text) {
  const box = $(`${tab}-why`);
  box.hidden = !text;
  box.textContent = text || "";
}

/// The claims of a JWT, unverified (only to prefill ids and warn early).
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch (_) {
    return null;
  }
}

/// Checks a pasted token before connecting: present, a JWT, not expired.
function tokenProblem(token) {
  if (!token) return "No token: paste one (make run prints a token for each dialect).";
  const claims = claimsOf(token);
  if (!claims) return null; // not a JWT we can read: let the server judge
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    return `This token expired at ${new Date(claims.exp * 1000).toISOString()}: mint a new one.`;
  }
  return null;
}

/// What a refusal body says, whatever the dialect's shape.
function reasonOf(status, text) {
  try {
    const body = JSON.parse(text);
    const message = (body.error && (body.error.message || body.error)) || body.msg || body.message;
    if (message) return `HTTP ${status}: ${typeof message === "string" ? message : JSON.stringify(message)}`;
  } catch (_) { /* not JSON */ }
  return `HTTP ${status}: ${text.slice(0, 300)}`;
}

const CLOSE_CODES = {
  1000: "normal close",
  1001: "the server is shutting down",
  1003: "binary frames are not accepted",
  1007: "invalid UTF-8",
  1008: "policy violation (rate, cap or registration time limit)",
  1009: "message too large",
  1013: "too slow to read: the outbound queue filled up",
  4401: "the token was refused",
};

/// Opens a socket for `tab`, keeps the state badge current, and when the
/// upgrade is refused (browsers only see 1006) asks the server why with a
/// plain GET of the same URL, which answers the refusal as JSON.
function openSocket(tab, url, onMessage, onOpen) {
  explain(tab, "");
  setState(tab, "connecting");
  const socket = new WebSocket(url);
  let opened = false;
  socket.onopen = () => {
    opened = true;
    setState(tab, "connected");
    log(tab, "sys", "connected");
    if (onOpen) onOpen(socket);
  };
  socket.onmessage = (event) => {
    log(tab, "in", event.data);
    if (onMessage) onMessage(event.data);
  };
  socket.onclose = (event) => {
    const meaning = CLOSE_CODES[event.code] || "";
    setState(tab, "closed", `${event.code}${event.reason ? " " + event.reason : ""}`);
    log(tab, "sys", `closed ${event.code} ${event.reason}${meaning ? " (" + meaning + ")" : ""}`);
    if (event.code === 4401) {
      explain(tab, `The server refused the token: ${event.reason || "no reason given"}.`);
    } else if (!opened) {
      const plain = url.replace(/^ws/, "http");
      fetch(plain, { cache: "no-store" })
        .then((r) => r.text().then((text) => explain(tab, `The upgrade was refused. ${reasonOf(r.status, text)}`)))
        .catch((e) => explain(tab, `Could not reach the edge: ${e}`));
    }
  };
  return socket;
}

function sender(tab, get) {
  return (text) => {
    const socket = get();
    if (!socket || socket.readyState !== WebSocket.OPEN) return log(tab, "sys", "not connected");
    socket.send(text);
    log(tab, "out", text);
  };
}

function guard(tab, token) {
  const problem = tokenProblem(token);
  if (problem) {
    explain(tab, problem);
    setState(tab, "disconnected");
    return false;
  }
  return true;
}

// ---- group ------------------------------------------------------------

let groupSocket = null;
const groupSend = sender("group", () => groupSocket);
$("group-token").addEventListener("change", () => {
  const claims = claimsOf($("group-token").value.trim());
  if (claims && claims.sub) $("group-client").value = claims.sub;
});
$("group-connect").onclick = () => {
  const token = $("group-token").value.trim();
  if (!guard("group", token)) return;
  if (groupSocket) groupSocket.close();
  const url = `${wsScheme}://${location.host}/v3/ws/group/${enc($("group-group").value)}` +
    `/client/${enc($("group-client").value)}?token=${enc(token)}`;
  groupSocket = openSocket("group", url);
};
$("group-disconnect").onclick = () => groupSocket && groupSocket.close();
$("group-send").onclick = () => groupSend($("group-message").value);
document.querySelectorAll(".example").forEach((button) => {
  button.onclick = () => {
    $(`${button.dataset.for}-message`).value = button.dataset.example;
    groupSend(button.dataset.example);
  };
});

// ---- JSON-RPC ---------------------------------------------------------

const RPC_METHODS = {
  user: {
    "hardwares.switchConvId": { convId: "conv_1" },
    "hardwares.switchConvId (with device)": { convId: "conv_1", hdId: "demo_device" },
  },
  app: {
    "redis.set": { key: "greeting", value: "hello", ttl: 60 },
    "redis.get": { key: "greeting" },
    "redis.del": { key: "greeting" },
    "subscribe": { channel: "news" },
    "redis.publish": { channel: "news", message: { text: "hi" } },
    "unsubscribe": { channel: "news" },
  },
  hardware: {
    "device.status": { status: "online", battery: 80 },
    "hardwares.switchConvId": { convId: "conv_1" },
  },
};
let rpcSocket = null;
let rpcNextId = 1;
const rpcSend = sender("rpc", () => rpcSocket);

function rpcTemplate() {
  const kind = $("rpc-kind").value;
  const label = $("rpc-method").value;
  const method = label.replace(/ \(.*\)$/, "");
  const request = { jsonrpc: "2.0", method, params: RPC_METHODS[kind][label], id: `r${rpcNextId}` };
  $("rpc-message").value = JSON.stringify(request);
}

function rpcKind() {
  const kind = $("rpc-kind").value;
  document.querySelectorAll("#tab-rpc [data-kind]").forEach((field) => {
    field.hidden = field.dataset.kind !== kind;
  });
  $("rpc-method").replaceChildren(...Object.keys(RPC_METHODS[kind]).map((name) => {
    const option = document.createElement("option");
    option.textContent = name;
    return option;
  }));
  rpcTemplate();
}
$("rpc-kind").onchange = rpcKind;
$("rpc-method").onchange = rpcTemplate;
rpcKind();

$("rpc-connect").onclick = () => {
  const token = $("rpc-token").value.trim();
  if (!guard("rpc", token)) return;
  if (rpcSocket) rpcSocket.close();
  const kind = $("rpc-kind").value;
  let path = "/v3/wss";
  if (kind === "app") path += `/${enc($("rpc-app").value)}/${enc($("rpc-tool").value)}`;
  if (kind === "hardware") path += `/${enc($("rpc-hd").value)}`;
  let url = `${wsScheme}://${location.host}${path}?token=${enc(token)}`;
  if (kind === "user" && $("rpc-conv").value) url += `&convId=${enc($("rpc-conv").value)}`;
  rpcSocket = openSocket("rpc", url);
};
$("rpc-disconnect").onclick = () => rpcSocket && rpcSocket.close();
$("rpc-send").onclick = () => {
  rpcSend($("rpc-message").value);
  rpcNextId += 1;
  rpcTemplate();
};
$("rpc-ping").onclick = () => rpcSend("ping");

// ---- IoT --------------------------------------------------------------

let iotSocket = null;
const iotSend = sender("iot", () => iotSocket);
$("iot-api").value = `${location.protocol}//${location.hostname}:8081`;

$("iot-connect").onclick = () => {
  const token = $("iot-token").value.trim();
  if (!guard("iot", token)) return;
  if (iotSocket) iotSocket.close();
  let url = `${wsScheme}://${location.host}/api/v1/system/common/websocket/connect` +
    `?app-code=${enc($("iot-app").value)}&token=${enc(token)}`;
  if ($("iot-project").value) url += `&project-id=${enc($("iot-project").value)}`;
  iotSocket = openSocket("iot", url);
};
$("iot-disconnect").onclick = () => iotSocket && iotSocket.close();

function iotParams() {
  try {
    return JSON.parse($("iot-params").value);
  } catch (e) {
    log("iot", "sys", `params are not JSON: ${e.message}`);
    return null;
  }
}
function iotSubscription(type) {
  const params = iotParams();
  if (params) iotSend(JSON.stringify({ type, body: { code: $("iot-code").value, params } }));
}
$("iot-subscribe").onclick = () => iotSubscription("up.sub");
$("iot-unsubscribe").onclick = () => iotSubscription("up.unSub");
$("iot-ping").onclick = () => iotSend(JSON.stringify({ type: "up.ping" }));

/// A test event matching the subscription form, as the server API takes it.
function iotEvent() {
  const params = iotParams() || {};
  const code = $("iot-code").value;
  const device = { productID: params.productID || "demo_product", deviceName: params.deviceName || "demo_device" };
  const identifier = params.identifier || "temperature";
  const body = { device, timestamp: new Date().toISOString(), identifier };
  if (code === "devicePropertyReportV2") body.params = { [identifier]: 21.5 };
  else body.param = { [identifier]: 21.5 };
  const event = { code, body };
  if (params.projectID) event.projectID = params.projectID;
  if (params.areaID) event.areaID = params.areaID;
  return event;
}
const shellQuote = (text) => `'${text.replace(/'/g, "'\\''")}'`;
$("iot-push").onclick = () => {
  const api = $("iot-api").value.replace(/\/+$/, "");
  const auth = $("iot-service-token").value.trim() || "<service token or API key>";
  const command = `curl -sS -X POST ${shellQuote(api + "/api/v1/iot/events")} \\\n` +
    `  -H ${shellQuote("Authorization: Bearer " + auth)} \\\n` +
    `  -H 'Content-Type: application/json' \\\n` +
    `  -d ${shellQuote(JSON.stringify(iotEvent()))}`;
  const box = $("iot-curl");
  box.hidden = false;
  box.textContent = command;
  if (navigator.clipboard) navigator.clipboard.writeText(command).catch(() => {});
  log("iot", "sys", "run the command shown above; the event arrives here as down.pub");
};

// ---- IM ---------------------------------------------------------------

const imPath = document.querySelector("meta[name=im-path]").content;
let imSocket = null;
let imUser = null;
let imNextId = 1;
let imLastReceived = null;
const imSend = sender("im", () => imSocket);

function imMessage(type, to, body) {
  return JSON.stringify({ id: `m${Date.now().toString(36)}-${imNextId++}`, type, isSystem: false, from: imUser, to, body });
}

$("im-login").onclick = async () => {
  const token = $("im-token").value.trim();
  if (!guard("im", token)) return;
  explain("im", "");
  if (imSocket) imSocket.close();
  setState("im", "connecting", "logging in");
  const url = `${$("im-prefix").value}/websocket/client/login/${enc($("im-client").value)}`;
  let sessionId;
  try {
    const reply = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    const text = await reply.text();
    if (!reply.ok) {
      setState("im", "closed", "login refused");
      explain("im", `Login refused. ${reasonOf(reply.status, text)}`);
      return;
    }
    sessionId = JSON.parse(text).sessionId;
    log("im", "sys", `logged in: session ${sessionId}`);
  } catch (e) {
    setState("im", "closed", "login failed");
    explain("im", `Could not log in: ${e}`);
    return;
  }
  imUser = (claimsOf(token) || {}).sub || "";
  const registerId = `register-${imNextId++}`;
  imSocket = openSocket("im", `${wsScheme}://${location.host}${imPath}`, (data) => {
    let message;
    try { message = JSON.parse(data); } catch (_) { return; }
    if (message.type === 9001 && message.id === registerId) {
      const status = JSON.parse(message.body || "{}");
      if (status.code === 200) setState("im", "connected", `registered as ${imUser}`);
      else explain("im", `Registration refused: ${status.status} ${status.msg}`);
    }
    if (message.type === 2001 || message.type === 3001 || message.type === 3003) {
      imLastReceived = message;
      $("im-receipt").disabled = false;
    }
  }, (socket) => {
    const register = JSON.stringify({ id: registerId, type: 1000, isSystem: false, from: imUser, to: "SYSTEM", body: JSON.stringify({ sessionId }) });
    socket.send(register);
    log("im", "out", register);
  });
};
$("im-disconnect").onclick = () => imSocket && imSocket.close();
$("im-send").onclick = () => imSend(imMessage(2001, $("im-to").value, $("im-text").value));
$("im-receipt").onclick = () => {
  if (!imLastReceived) return;
  const receipt = JSON.stringify({
    id: imLastReceived.id, type: 9101, isSystem: false, from: imUser, to: imLastReceived.from,
    body: JSON.stringify({ code: 200, status: "SUCCESS", msg: "read" }),
  });
  imSend(receipt);
};
