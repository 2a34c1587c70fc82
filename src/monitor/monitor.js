// Saga monitor: signs in, lists recent sagas, keeps them live over the `sagaChanges`
// subscription (graphql-transport-ws), and shows one saga's timeline. No framework, no build step.
"use strict";

const MAX_ROWS = 200;
const SAGA_FIELDS = "id databaseId type orderId orderDatabaseId orderStatus status step failureReason eventCount createdAt updatedAt attempt lastError nextAction";
const ACTION_NAMES = {
  retrySagaStep: "Retry the step of",
  resumeSaga: "Resume (the step took effect)",
  forceCompensateSaga: "Force compensation of",
  forceCompleteSaga: "Force completion of",
};
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  refreshToken: null,
  expiresAt: 0, // when the access token expires, ms since the epoch
  renewTimer: null,
  sagas: new Map(), // saga id -> { saga, row }
  selected: null,
  pending: null, // the action waiting for confirmation
  socket: null,
  retry: 0,
};

async function graphql(query, variables = {}, anonymous = false) {
  const headers = { "content-type": "application/json" };
  if (state.token && !anonymous) headers.authorization = `Bearer ${state.token}`;
  const res = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await res.json();
  if (body.errors && body.errors.length) {
    const e = body.errors[0];
    const err = new Error(e.message);
    err.code = e.extensions && e.extensions.code;
    throw err;
  }
  return body.data;
}

function showError(message) {
  $("error").textContent = message || "";
}

function time(iso) {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

function ms(a, b) {
  const d = new Date(b) - new Date(a);
  return d < 1000 ? `${d} ms` : `${(d / 1000).toFixed(2)} s`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function renderRow(saga, row) {
  const order = cell(`${saga.orderDatabaseId.slice(0, 8)}…`, "order");
  order.title = saga.orderDatabaseId;
  row.replaceChildren(
    order,
    cell(saga.type, `type type-${saga.type}`),
    cell(saga.orderStatus, `order-status order-${saga.orderStatus}`),
    cell(saga.status, `status status-${saga.status}`),
    cell(saga.step || "DONE", "step"),
    cell(saga.failureReason || "", "reason"),
    cell(saga.eventCount, "events"),
    cell(time(saga.createdAt), "created"),
    cell(time(saga.updatedAt), "updated"),
  );
  row.dataset.sagaId = saga.id;
  row.dataset.orderId = saga.orderId;
  row.dataset.status = saga.status;
  row.dataset.type = saga.type;
  row.dataset.orderStatus = saga.orderStatus;
}

// Inserts or updates a saga; an older copy (fewer events) never overwrites a newer one.
function upsert(saga, live) {
  const known = state.sagas.get(saga.id);
  if (known && known.saga.eventCount > saga.eventCount) return;
  const tbody = $("sagas").tBodies[0];
  let row = known && known.row;
  if (!row) {
    row = document.createElement("tr");
    row.addEventListener("click", () => select(saga.id));
    const created = new Date(saga.createdAt);
    const before = [...tbody.rows].find((r) => new Date(state.sagas.get(r.dataset.sagaId).saga.createdAt) < created);
    tbody.insertBefore(row, before || null);
  }
  renderRow(saga, row);
  if (live) {
    row.classList.remove("flash");
    void row.offsetWidth; // restart the animation
    row.classList.add("flash");
  }
  state.sagas.set(saga.id, { saga, row });
  while (tbody.rows.length > MAX_ROWS) {
    const last = tbody.rows[tbody.rows.length - 1];
    state.sagas.delete(last.dataset.sagaId);
    last.remove();
  }
  $("empty").hidden = state.sagas.size > 0;
  renderSummary();
  if (live) refreshAttention();
  if (state.selected === saga.id) loadDetail(saga.id);
}

function renderSummary() {
  const counts = {};
  for (const { saga } of state.sagas.values()) counts[saga.status] = (counts[saga.status] || 0) + 1;
  const parts = Object.keys(counts).sort().map((status) => {
    const span = document.createElement("span");
    span.className = `count status-${status}`;
    span.dataset.status = status;
    span.textContent = `${status} ${counts[status]}`;
    return span;
  });
  $("counts").replaceChildren(...parts);
}

// How many sagas (all of them, not only those listed) wait for an operator; at most once a second.
let attentionTimer = null;
function refreshAttention() {
  if (attentionTimer) return;
  attentionTimer = setTimeout(async () => {
    attentionTimer = null;
    try {
      const data = await graphql(`query Attention { sagas(filter: { status: NEEDS_ATTENTION }, first: 1) { totalCount } }`);
      const n = data.sagas.totalCount;
      $("attention").dataset.count = n;
      $("attention").textContent = `Needing attention: ${n}`;
      $("attention").classList.toggle("status-NEEDS_ATTENTION", n > 0);
    } catch (e) {
      showError(`Could not count sagas needing attention: ${e.message}`);
    }
  }, 200);
}

async function select(id) {
  state.selected = id;
  for (const { row } of state.sagas.values()) row.classList.toggle("selected", row.dataset.sagaId === id);
  await loadDetail(id);
}

async function loadDetail(id) {
  try {
    const data = await graphql(
      `query Saga($id: ID!) { saga(id: $id) { ${SAGA_FIELDS} events { sequence type detail createdAt } auditLog { action actor reason createdAt before after } } }`,
      { id },
    );
    if (state.selected !== id) return;
    const s = data.saga;
    $("detail").hidden = false;
    $("detail-id").textContent = s.databaseId;
    $("detail-order").textContent = s.orderDatabaseId;
    $("detail-status").textContent = s.status;
    $("detail-status").className = `status status-${s.status}`;
    $("detail-reason").textContent = s.failureReason || "—";
    const last = s.events.length ? s.events[s.events.length - 1].createdAt : s.updatedAt;
    $("detail-duration").textContent = ms(s.createdAt, last);
    $("detail-attempt").textContent = s.attempt;
    $("detail-error").textContent = s.lastError || "—";
    $("detail-next").textContent = s.nextAction || "—";
    const finished = s.status === "COMPLETED" || s.status === "COMPENSATED";
    $("actions").hidden = finished;
    if (finished) $("confirm").hidden = true;
    $("audit").replaceChildren(...s.auditLog.map((a) => {
      const li = document.createElement("li");
      li.dataset.action = a.action;
      li.textContent = `${time(a.createdAt)} ${a.action} by ${a.actor}: ${a.reason} (${a.before.status} → ${a.after.status})`;
      return li;
    }));
    let compensating = false;
    const items = s.events.map((e, i) => {
      const li = document.createElement("li");
      li.dataset.type = e.type;
      if (e.type === "CANCEL_REQUESTED" || /REJECTED|DECLINED|FAILED|TIMED_OUT/.test(e.type)) compensating = true;
      const name = document.createElement("strong");
      name.textContent = e.type;
      if (compensating && i > 0) name.className = "compensation";
      const took = document.createElement("span");
      took.className = "took";
      took.textContent = i === 0 ? time(e.createdAt) : `+${ms(s.events[i - 1].createdAt, e.createdAt)}`;
      li.append(name, took);
      if (e.detail) {
        const why = document.createElement("span");
        why.className = "why";
        why.textContent = e.detail;
        li.append(why);
      }
      return li;
    });
    $("timeline").replaceChildren(...items);
  } catch (e) {
    showError(`Could not load saga ${id}: ${e.message}`);
  }
}

// Repair actions: pick one, say why, confirm.
function ask(action) {
  const known = state.sagas.get(state.selected);
  state.pending = action;
  $("confirm-question").textContent =
    `${ACTION_NAMES[action]} saga ${known ? known.saga.databaseId : state.selected} (order ${known ? known.saga.orderDatabaseId : "?"})?`;
  $("confirm-reason").value = "";
  $("confirm").hidden = false;
  $("confirm-reason").focus();
}

async function confirmAction(event) {
  event.preventDefault();
  const action = state.pending;
  const id = state.selected;
  if (!action || !id) return;
  $("confirm").hidden = true;
  state.pending = null;
  try {
    const data = await graphql(
      `mutation Repair($id: ID!, $reason: String!, $key: String!) { ${action}(input: { sagaId: $id, reason: $reason, idempotencyKey: $key }) { replayed saga { ${SAGA_FIELDS} } } }`,
      { id, reason: $("confirm-reason").value, key: crypto.randomUUID() },
    );
    const result = data[action];
    $("action-result").textContent = result.replayed
      ? "Already applied with this key: nothing more was done."
      : `Applied: the saga went to ${result.saga.status}.`;
    upsert(result.saga, true);
    await loadDetail(id);
  } catch (e) {
    $("action-result").textContent = `Refused (${e.code || "error"}): ${e.message}`;
  }
}

function setConnection(s) {
  $("connection").dataset.state = s;
  $("connection").textContent = s;
}

const SESSION_FIELDS = "accessToken refreshToken accessExpiresAt";

// Keeps the session's tokens, and renews them before the access token expires: the server closes
// a subscription whose token expired (4403), so the page reconnects with a fresh one first.
function setSession(session) {
  state.token = session.accessToken;
  state.refreshToken = session.refreshToken;
  state.expiresAt = Date.parse(session.accessExpiresAt);
  clearTimeout(state.renewTimer);
  const left = state.expiresAt - Date.now();
  const lead = Math.min(60_000, left / 2);
  state.renewTimer = setTimeout(() => renew().then(reconnect, signedOut), Math.max(0, left - lead));
}

async function renew() {
  const data = await graphql(
    `mutation Renew($token: String!) { refreshSession(refreshToken: $token) { ${SESSION_FIELDS} } }`,
    { token: state.refreshToken },
    true,
  );
  setSession(data.refreshSession);
}

// A new connection with the current token; the old one is closed by the page, not the server.
function reconnect() {
  const old = state.socket;
  state.socket = null;
  if (old) old.close(1000);
  connect();
}

function signedOut() {
  clearTimeout(state.renewTimer);
  const old = state.socket;
  state.token = null;
  state.socket = null;
  if (old) old.close(1000);
  $("monitor").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = "Your session ended: sign in again.";
}

// Subscribes first, then loads the table, so no change between the two is missed.
function connect() {
  setConnection("connecting");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql/ws`;
  const socket = new WebSocket(url, "graphql-transport-ws");
  state.socket = socket;
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${state.token}` } }));
  };
  socket.onmessage = async (event) => {
    const msg = JSON.parse(event.data);
    switch (msg.type) {
      case "connection_ack":
        socket.send(JSON.stringify({
          id: "changes",
          type: "subscribe",
          payload: { query: `subscription Changes { sagaChanges { ${SAGA_FIELDS} } }` },
        }));
        try {
          const data = await graphql(
            // Within the API's complexity limit: the 50 newest, and up to 10 that need attention.
            `query Recent { recent: sagas(first: 50) { nodes { ${SAGA_FIELDS} } } stuck: sagas(filter: { status: NEEDS_ATTENTION }, first: 10) { edges { node { ${SAGA_FIELDS} } } } }`,
          );
          for (const saga of data.recent.nodes.slice().reverse()) upsert(saga, false);
          for (const edge of data.stuck.edges) upsert(edge.node, false);
          refreshAttention();
          state.retry = 0;
          showError("");
          setConnection("live");
        } catch (e) {
          showError(`Could not load sagas: ${e.message}`);
        }
        break;
      case "next":
        if (msg.payload.errors) showError(msg.payload.errors[0].message);
        else upsert(msg.payload.data.sagaChanges, true);
        break;
      case "error":
        showError(msg.payload[0] ? msg.payload[0].message : "subscription refused");
        break;
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        break;
    }
  };
  socket.onclose = (event) => {
    if (state.socket !== socket || !state.token) return;
    if (event.code === 4403) {
      // The session or its token ended: renew (signing out if the session is over), reconnect.
      renew().then(connect, signedOut);
      return;
    }
    setConnection("offline");
    const wait = Math.min(10000, 500 * 2 ** state.retry++);
    setTimeout(connect, wait);
  };
}

async function signIn(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const data = await graphql(
      `mutation SignIn($input: SignInInput!) { signIn(input: $input) { session { ${SESSION_FIELDS} user { email roles } } userErrors { message } } }`,
      { input: { email: $("email").value, password: $("password").value } },
    );
    const { session, userErrors } = data.signIn;
    if (!session) {
      $("login-error").textContent = userErrors.map((e) => e.message).join(" ");
      return;
    }
    const { user } = session;
    if (!user.roles.includes("OPERATOR")) {
      $("login-error").textContent =
        `${user.email} does not have the operator role. Grant it with "api grant-role ${user.email} operator", then sign in again.`;
      return;
    }
    setSession(session);
    $("who").textContent = user.email;
    $("login").hidden = true;
    $("monitor").hidden = false;
    connect();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => ask(button.dataset.action));
  }
  $("confirm").addEventListener("submit", confirmAction);
  $("confirm-no").addEventListener("click", () => {
    state.pending = null;
    $("confirm").hidden = true;
  });
});
