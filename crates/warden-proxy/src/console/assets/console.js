// Warden's admin console: plain JavaScript, no library, no inline script or style (the
// Content-Security-Policy allows neither). Every value from the API is put in the page as
// text (textContent), never as markup: route names, request ids and event fields are data.
"use strict";

(function () {
  const TOKEN_KEY = "warden-admin-token";
  const PAGES = ["overview", "routes", "upstreams", "events", "authority", "config"];
  const REFRESH_MS = 5000;
  const EVENTS_POLL_MS = 1000;
  const EVENTS_SHOWN = 500;

  let timer = null;
  let generation = 0;
  let eventsLast = 0;
  let eventRows = [];

  // ---- helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function table(headers, rows, numeric) {
    const num = new Set(numeric || []);
    return el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", num.has(i) ? { class: "num" } : {}, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", num.has(i) ? { class: "num" } : {}, c))))));
  }

  function card(label, value, cls) {
    return el("div", { class: "card" }, el("div", { class: "label" }, label),
      el("div", { class: "value" + (cls ? " " + cls : "") }, value));
  }

  function tag(text, cls) {
    return el("span", { class: "tag" + (cls ? " " + cls : "") }, text);
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " days";
  }

  function when(unix) {
    if (!unix) return "–";
    return new Date(unix * 1000).toISOString().replace(".000Z", "Z");
  }

  function pct(x) {
    return (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1) + " %";
  }

  function ms(x) {
    return x === null || x === undefined ? "–" : x.toFixed(x < 10 ? 2 : 0) + " ms";
  }

  function status(text) {
    document.getElementById("status").textContent = text;
  }

  // ---- the API -------------------------------------------------------------------------

  class Refused extends Error {}

  function authHeaders() {
    const t = sessionStorage.getItem(TOKEN_KEY);
    return t ? { Authorization: "Bearer " + t } : {};
  }

  async function api(path) {
    const resp = await fetch("/console/api/" + path, {
      headers: authHeaders(),
      cache: "no-store",
      credentials: "omit",
    });
    if (resp.status === 401 || resp.status === 403) {
      // The session check said yes, and now no: the token changed under us.
      await checkSession();
      throw new Refused("refused");
    }
    if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
    return resp.json();
  }

  // Asks the open session endpoint whether a token is needed (and whether ours is right),
  // so that no data request is made to be refused.
  async function checkSession() {
    const resp = await fetch("/console/api/session", {
      headers: authHeaders(),
      cache: "no-store",
      credentials: "omit",
    });
    const s = await resp.json();
    const token = document.getElementById("token");
    const forbidden = document.getElementById("forbidden");
    const view = document.getElementById("view");
    if (s.authorized) {
      token.classList.add("hidden");
      forbidden.classList.add("hidden");
      view.classList.remove("hidden");
      return true;
    }
    view.classList.add("hidden");
    if (s.forbidden) {
      document.getElementById("forbidden-message").textContent = s.message;
      forbidden.classList.remove("hidden");
      return false;
    }
    const err = document.getElementById("token-error");
    if (sessionStorage.getItem(TOKEN_KEY)) {
      err.textContent = "That token was refused.";
      err.classList.remove("hidden");
      sessionStorage.removeItem(TOKEN_KEY);
    }
    token.classList.remove("hidden");
    document.getElementById("token-input").focus();
    status("token needed");
    return false;
  }

  // ---- pages ---------------------------------------------------------------------------

  function sparkline(series, width, height) {
    const s = svg("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    const max = Math.max(1, ...series.map((b) => b.requests));
    const step = series.length > 1 ? width / (series.length - 1) : width;
    const y = (v) => (height - 2 - (v / max) * (height - 4)).toFixed(1);
    const line = (key) => series.map((b, i) => `${(i * step).toFixed(1)},${y(b[key])}`).join(" ");
    s.append(svg("line", { class: "base", x1: 0, y1: height - 1, x2: width, y2: height - 1 }));
    if (series.length > 1) {
      s.append(svg("polyline", { class: "requests", points: line("requests") }));
      s.append(svg("polyline", { class: "errors", points: line("server_errors") }));
    }
    const title = svg("title", {});
    title.textContent = `${series.length} buckets, up to ${max} requests each`;
    s.append(title);
    return s;
  }

  async function overview(view) {
    const o = await api("overview");
    const g = o.gateway;
    const total = o.routes.reduce((n, r) => n + r.last_minute.requests, 0);
    const errors = o.routes.reduce((n, r) => n + r.last_minute.server_errors, 0);
    view.replaceChildren(
      el("h1", {}, "Overview"),
      el("div", { class: "cards" },
        card("Ready", g.ready ? "yes" : "no", g.ready ? "ok" : "bad"),
        card("Requests, last minute", total),
        card("5xx, last minute", errors, errors ? "bad" : "ok"),
        card("Open connections", g.open_connections),
        card("In flight", g.in_flight),
        card("Up for", age(o.now - g.started)),
        card("Config SHA-256", g.config_sha256 ? g.config_sha256.slice(0, 12) + "…" : "–")),
      el("h2", {}, `Routes (last minute; chart: the last ${o.window_seconds / 60} minutes in ${o.bucket_seconds}-second buckets)`),
      el("div", { class: "legend" }, el("span", { class: "requests" }, "━ requests"), "  ",
        el("span", { class: "errors" }, "━ 5xx")),
      o.routes.length === 0
        ? el("p", { class: "muted" }, "No request has been answered yet.")
        : table(["Route", "Requests", "5xx", "Error ratio", "4xx (refused)", "p99", "Last 10 minutes"],
          o.routes.map((r) => [
            r.route === "-" ? el("span", { class: "muted" }, "(no route matched)") : el("span", { class: "mono" }, r.route),
            r.last_minute.requests,
            r.last_minute.server_errors,
            el("span", { class: r.last_minute.error_ratio > 0.01 ? "bad" : "" }, pct(r.last_minute.error_ratio)),
            r.last_minute.client_errors,
            ms(r.last_minute.p99_ms),
            sparkline(r.series, 240, 32),
          ]), [1, 2, 3, 4, 5]));
  }

  function describeAuth(auth) {
    if (auth === "none") return [tag("public", "warn")];
    if (!auth || typeof auth !== "object") return [tag("?")];
    const out = (auth.accept || []).map((a) => tag(a));
    if ((auth.scopes_all || []).length) out.push(el("div", {}, "scopes (all): ", auth.scopes_all.join(", ")));
    if ((auth.scopes_any || []).length) out.push(el("div", {}, "scopes (any): ", auth.scopes_any.join(", ")));
    if ((auth.subjects || []).length) out.push(el("div", {}, "subjects: ", auth.subjects.join(", ")));
    if ((auth.claims || []).length) out.push(el("div", {}, "claims: ", auth.claims.map((c) => c.claim).join(", ")));
    if ((auth.allow_methods || []).length) out.push(el("div", {}, "methods: ", auth.allow_methods.join(", ")));
    if (auth.policy) out.push(el("div", {}, tag("Cedar policies", "ok")));
    if (auth.upstream_token) out.push(el("div", { class: "muted" }, "upstream token: " + auth.upstream_token));
    return out;
  }

  function describeMatch(m) {
    const out = [];
    out.push(el("div", { class: "mono" }, m.path_exact ? "= " + m.path_exact
      : m.path_prefix ? m.path_prefix + "*" : m.path_regex ? "~ " + m.path_regex : "any path"));
    if (m.hosts) out.push(el("div", { class: "muted" }, "hosts: " + m.hosts.join(", ")));
    if (m.methods) out.push(el("div", { class: "muted" }, "methods: " + m.methods.join(", ")));
    if (m.headers) out.push(el("div", { class: "muted" }, "headers: " + m.headers.map((h) => h.name).join(", ")));
    return out;
  }

  function describeLimits(limits) {
    if (!limits || limits.length === 0) return [el("span", { class: "muted" }, "none")];
    return limits.map((l) => el("div", {},
      `${l.requests} per ${l.per} by ${Array.isArray(l.key) ? l.key.join("+") : l.key}` +
      (l.burst ? `, burst ${l.burst}` : "") + (l.store && l.store !== "local" ? ` (${l.store})` : "")));
  }

  async function routes(view) {
    const r = await api("routes");
    view.replaceChildren(
      el("h1", {}, "Routes"),
      table(["Route", "Match", "Listeners", "Authentication", "Rate limits", "Cluster"],
        r.routes.map((x) => [
          el("span", { class: "mono" }, x.name),
          describeMatch(x.match),
          x.listeners.join(", "),
          describeAuth(x.auth),
          describeLimits(x.rate_limits),
          el("span", { class: "mono" }, x.cluster),
        ])),
      el("h2", {}, "Cedar policies"),
      r.policies.length === 0
        ? el("p", { class: "muted" }, "No policy files (auth.policies).")
        : table(["Policy id", "Effect"], r.policies.map((p) => [
          el("span", { class: "mono" }, p.id), tag(p.effect, p.effect === "permit" ? "ok" : "bad")])),
      (r.policy_files || []).length ? el("p", { class: "muted" }, "From " + r.policy_files.join(", ")) : null);
  }

  function breaker(b) {
    if (b.state === "closed") return tag("closed", "ok");
    if (b.state === "open") return tag(`open (${Math.ceil(b.seconds_left)} s left)`, "bad");
    return tag(b.state.replace("_", "-"), "warn");
  }

  async function upstreams(view) {
    const u = await api("upstreams");
    const parts = [el("h1", {}, "Upstreams")];
    for (const c of u.clusters) {
      parts.push(el("h2", {}, el("span", { class: "mono" }, c.name), " ",
        el("span", { class: "muted" }, `${c.in_flight} in flight`)));
      parts.push(table(["Endpoint", "Health", "Breaker", "Ejections in a row", "In flight"],
        c.endpoints.map((e) => [
          el("span", { class: "mono" }, e.endpoint),
          e.healthy ? tag("healthy", "ok") : tag("unhealthy", "bad"),
          breaker(e.breaker),
          e.ejections_in_a_row,
          e.in_flight,
        ]), [3, 4]));
    }
    view.replaceChildren(...parts);
  }

  function eventRow(e, live) {
    const bad = /failure|denied|refused|ejected|failed|dropped/.test(e.event) || e.reason === "refused";
    const row = el("tr", { class: live ? "new" : null, "data-seq": e.seq },
      el("td", { class: "num" }, e.seq),
      el("td", { class: "mono" }, e.time),
      el("td", {}, e.component || "gateway"),
      el("td", {}, tag(e.event, bad ? "bad" : "")),
      el("td", { class: "mono" }, e.reason),
      el("td", { class: "mono" }, e.route || ""),
      el("td", { class: "num" }, e.status || ""),
      el("td", { class: "mono" }, e.client || ""),
      el("td", { class: "mono" }, e.subject || ""),
      el("td", { class: "num" }, e.suppressed || ""));
    if (live) setTimeout(() => row.classList.remove("new"), 3000);
    return row;
  }

  async function events(view, gen) {
    if (!view.querySelector("#events-body")) {
      eventsLast = 0;
      eventRows = [];
      view.replaceChildren(
        el("h1", {}, "Security events"),
        el("p", { class: "muted", id: "events-note" }, "Live: new events appear at the top as they happen."),
        el("table", { id: "events-table" },
          el("thead", {}, el("tr", {}, ["#", "Time", "Component", "Event", "Reason", "Route", "Status",
            "Client", "Subject", "Suppressed"].map((h) => el("th", {}, h)))),
          el("tbody", { id: "events-body" })));
    }
    const body = view.querySelector("#events-body");
    // Rows that arrive while the page is open are marked for a moment; the first ones are not.
    const live = eventsLast > 0;
    let page;
    do {
      page = await api("events?after=" + eventsLast);
      if (gen !== generation) return;
      if (page.oldest > eventsLast + 1 && eventsLast > 0) {
        document.getElementById("events-note").textContent =
          `Live. Events ${eventsLast + 1}–${page.oldest - 1} were pushed out of memory before they were shown.`;
      }
      for (const e of page.events) {
        const row = eventRow(e, live);
        body.prepend(row);
        eventRows.push(row);
        eventsLast = Math.max(eventsLast, e.seq);
      }
      while (eventRows.length > EVENTS_SHOWN) eventRows.shift().remove();
    } while (page.more);
    eventsLast = Math.max(eventsLast, page.last);
  }

  async function authority(view) {
    const a = await api("authority");
    if (!a.enabled) {
      view.replaceChildren(el("h1", {}, "Authority"),
        el("p", { class: "muted" }, "No authority runs in this process ([authority] enabled = false)."));
      return;
    }
    const parts = [el("h1", {}, "Authority")];
    if (a.error) parts.push(el("p", { class: "error" }, a.error));
    const seal = a.seal || {};
    parts.push(el("div", { class: "cards" },
      card("Seal", seal.sealed ? "sealed" : "unsealed", seal.sealed ? "bad" : "ok"),
      card("Seal type", seal.type || "–"),
      card("Clients", a.clients === undefined || a.clients === null ? "–" : a.clients),
      card("Disabled clients", a.disabled_clients === undefined || a.disabled_clients === null ? "–" : a.disabled_clients),
      card("Issuer", a.issuer || "–")));
    if (seal.sealed) parts.push(el("p", { class: "muted" },
      `Unseal progress: ${seal.progress} of ${seal.threshold} key shares.`));
    parts.push(el("h2", {}, "Token signing keys"));
    parts.push((a.signing_keys || []).length === 0
      ? el("p", { class: "muted" }, "None loaded (sealed, or not started).")
      : table(["Key id", "Algorithm", "Age", "Signs from", "State"],
        a.signing_keys.map((k) => [el("span", { class: "mono" }, k.kid), k.alg, age(k.age_seconds),
          k.activates_at === 0 ? "the start" : when(k.activates_at), k.signing ? tag("signing", "ok") : tag(k.activates_at > a.now ? "published, not yet signing" : "retiring", "warn")])));
    parts.push(el("h2", {}, "Certificate authority"));
    const ca = a.ca;
    if (!ca) {
      parts.push(el("p", { class: "muted" }, "No CA ([authority.ca] not set, or sealed)."));
    } else {
      parts.push(el("div", { class: "cards" },
        card("Trust domain", ca.trust_domain),
        card("Signing intermediate expires", ca.signer_expires_at ? when(ca.signer_expires_at) : "–",
          ca.signer_expires_at && ca.signer_expires_at - a.now < 86400 ? "bad" : "")));
      parts.push(table(["Certificate", "Not before", "Expires", "Expires in"],
        (ca.roots || []).map((r) => ["root", when(r.not_before), when(r.not_after), age(r.not_after - a.now)])
          .concat((ca.intermediates || []).map((r) => ["intermediate", when(r.not_before), when(r.not_after), age(r.not_after - a.now)]))));
    }
    view.replaceChildren(...parts);
  }

  let lastConfig = "";

  async function config(view) {
    const c = await api("config");
    // Re-drawn only when something changed, so that a reader's scroll position stays.
    const key = JSON.stringify(c);
    if (key === lastConfig && view.querySelector("#config-json")) return;
    lastConfig = key;
    view.replaceChildren(
      el("h1", {}, "Running config"),
      el("p", { class: "muted" }, c.path ? "From " + c.path + ". Secrets show only as their references (env:, file:, vault:)." : "Secrets show only as their references."),
      el("h2", {}, "Loads and reloads (newest first)"),
      table(["Time", "Outcome", "Config SHA-256", "Errors"], c.reloads.map((r) => [
        el("span", { class: "mono" }, r.time),
        tag(r.outcome, r.outcome === "accepted" || r.outcome === "started" ? "ok" : "bad"),
        el("span", { class: "mono" }, r.config_sha256 ? r.config_sha256.slice(0, 16) + "…" : "–"),
        r.errors.length === 0 ? "" : el("div", {}, r.errors.map((e) => el("div", { class: "mono error" }, e)),
          r.more_errors ? el("div", { class: "muted" }, `and ${r.more_errors} more`) : null),
      ])),
      el("h2", {}, "Config"),
      el("pre", { id: "config-json" }, JSON.stringify(c.config, null, 2)));
  }

  const RENDER = { overview, routes, upstreams, events, authority, config };
  const INTERVAL = { events: EVENTS_POLL_MS };

  // ---- navigation ----------------------------------------------------------------------

  function current() {
    const p = location.hash.replace("#", "");
    return PAGES.includes(p) ? p : "overview";
  }

  async function show() {
    const page = current();
    const gen = ++generation;
    clearTimeout(timer);
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.page === page);
    }
    const view = document.getElementById("view");
    if (view.dataset.page !== page) {
      view.replaceChildren(el("p", { class: "muted" }, "Loading…"));
      view.dataset.page = page;
    }
    document.title = "Warden console — " + page;
    try {
      if (!(await checkSession())) return;
      await RENDER[page](view, gen);
      if (gen !== generation) return;
      view.dataset.loaded = page;
      status("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      if (e instanceof Refused || gen !== generation) return;
      status("error: " + e.message);
    }
    const every = INTERVAL[page] === undefined ? REFRESH_MS : INTERVAL[page];
    if (every > 0 && gen === generation) timer = setTimeout(() => { if (gen === generation) refresh(page, gen); }, every);
  }

  async function refresh(page, gen) {
    const view = document.getElementById("view");
    try {
      await RENDER[page](view, gen);
      if (gen === generation) status("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      if (e instanceof Refused || gen !== generation) return;
      status("error: " + e.message);
    }
    const every = INTERVAL[page] === undefined ? REFRESH_MS : INTERVAL[page];
    if (gen === generation) timer = setTimeout(() => { if (gen === generation) refresh(page, gen); }, every);
  }

  function saveToken() {
    const input = document.getElementById("token-input");
    const t = input.value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    input.value = "";
    document.getElementById("token-error").classList.add("hidden");
    document.getElementById("view").dataset.page = "";
    show();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("token-save").addEventListener("click", saveToken);
    document.getElementById("token-input").addEventListener("keydown", (e) => {
      if (e.key === "Enter") saveToken();
    });
    window.addEventListener("hashchange", show);
    show();
  });
})();
