// The status page of an mldht node: polls /api/status and /api/history, follows
// /api/events, and runs get_peers lookups through /api/get-peers (NDJSON).
// No framework and nothing from outside; everything from the network goes in as text.
"use strict";

(() => {
  const POLL_MS = 2000;
  const MAX_BACKOFF_MS = 30000;
  const MAX_EVENTS = 50;
  const MAX_FINISHED = 8;
  const LOOKUP_TIMEOUT = 20;
  const RECENT_SECONDS = 30;
  const EVENT_KINDS = ["node_added", "node_removed", "lookup_finished", "external_ip_changed",
    "node_id_changed", "error_received"];
  const METHODS = ["ping", "find_node", "get_peers", "announce_peer", "get", "put",
    "sample_infohashes"];
  const STATES = ["good", "questionable", "bad", "replacements"];
  const COUNTERS = [["datagrams-in", "datagrams_received"], ["datagrams-out", "datagrams_sent"],
    ["bytes-in", "bytes_received", fmtBytes], ["bytes-out", "bytes_sent", fmtBytes],
    ["queries-out-total", "queries_sent"], ["responses-in", "responses_received"],
    ["timeouts", "timeouts"]];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const MAX_HISTORY_SAMPLES = 300; // the server keeps as many (10 minutes at 2 s)
  const state = { status: null, history: null, family: null, familyKey: "", failures: 0, finished: [] };
  let pollTimer = 0;

  // --- small helpers ------------------------------------------------------------------------

  function el(tag, className, text, children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (children) node.append(...children);
    return node;
  }

  function svg(parent, tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    parent.appendChild(node);
    return node;
  }

  const num = (n) => (typeof n === "number" && isFinite(n) ? n : 0);
  const fmtInt = (n) => Math.round(num(n)).toLocaleString("en-US");
  const fmtRate = (r) => (r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r >= 0.005 ? r.toFixed(2) : "0");
  const plural = (n, word) => `${fmtInt(n)} ${word}${num(n) === 1 ? "" : "s"}`;
  const shortHex = (hex) => (typeof hex === "string" && hex.length > 14
    ? `${hex.slice(0, 8)}…${hex.slice(-4)}` : String(hex));

  function fmtBytes(n) {
    n = num(n);
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`;
  }

  function fmtDuration(seconds) {
    const t = Math.max(0, Math.floor(num(seconds)));
    const [d, h, m, s] = [Math.floor(t / 86400), Math.floor(t / 3600) % 24, Math.floor(t / 60) % 60, t % 60];
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
  }

  const fmtSeconds = (s) => (typeof s !== "number" ? "–"
    : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(s < 10 ? 2 : 1)} s`);

  function setValue(id, value, format) { // the number, formatted, and raw in data-value
    const node = $(id);
    node.textContent = (format || fmtInt)(value);
    node.dataset.value = String(num(value));
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const pow = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= v - 1e-9) return m * pow;
    return 10 * pow;
  }

  // Charts are drawn in CSS pixels of their current width: text keeps its size on a phone.
  const chartWidth = (node, fallback) => Math.max(260, Math.round(node.getBoundingClientRect().width || fallback));

  function clearSvg(node, width, height) {
    node.replaceChildren();
    node.setAttribute("viewBox", `0 0 ${width} ${height}`);
    node.setAttribute("preserveAspectRatio", "xMinYMin meet");
  }

  const sum = (values) => values.reduce((a, b) => a + num(b), 0);

  // --- fetching and polling ------------------------------------------------------------------

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) { /* not JSON */ }
    return response.statusText || "request failed";
  }

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store", signal: AbortSignal.timeout(10000) });
    if (!response.ok) throw Object.assign(new Error(await errorMessage(response)), { status: response.status });
    return response.json();
  }

  function setConnection(ok, error) {
    const badge = $("conn");
    document.body.classList.toggle("stale", !ok);
    badge.className = `badge ${ok ? "badge-ok" : "badge-bad"}`;
    badge.textContent = ok ? "live" : error && error.status === 401 ? "token needed" : "disconnected";
    badge.title = ok ? `updated ${new Date().toLocaleTimeString("en-GB")}`
      : (error && error.message) || "the node does not answer";
  }

  async function poll() {
    clearTimeout(pollTimer);
    if (state.polling) return; // the poll under way schedules the next
    if (document.hidden) { pollTimer = setTimeout(poll, POLL_MS); return; }
    let data = null;
    state.polling = true;
    try {
      // After the first poll, only the samples taken since the last one we hold.
      const held = state.history && state.history.samples.length
        ? state.history.samples[state.history.samples.length - 1].t : null;
      const historyUrl = held === null ? "/api/history" : `/api/history?since=${held}`;
      data = [await getJSON("/api/status"), await getJSON(historyUrl)]; // one error when down
      state.failures = 0;
      setConnection(true);
    } catch (error) {
      state.failures += 1;
      setConnection(false, error);
    } finally {
      state.polling = false;
    }
    const delay = Math.min(MAX_BACKOFF_MS, POLL_MS * Math.pow(2, Math.max(0, state.failures - 1)));
    pollTimer = setTimeout(poll, delay);
    if (data) {
      state.status = data[0];
      state.history = mergeHistory(state.history, data[1]);
      render();
    }
  }

  function mergeHistory(held, fresh) {
    if (!held || !Array.isArray(fresh.samples)) return fresh;
    const samples = held.samples.concat(fresh.samples).slice(-MAX_HISTORY_SAMPLES);
    return { interval: fresh.interval, samples };
  }

  function render() {
    if (state.status) renderStatus(state.status);
    if (state.history) drawTraffic(state.history);
  }

  // --- status --------------------------------------------------------------------------------

  function renderStatus(status) {
    $("uptime").textContent = fmtDuration(status.uptime);
    $("read-only").hidden = !status.read_only;
    renderFamilies(status.families || {});
    const c = status.counters || {};
    for (const [id, key, format] of COUNTERS) setValue(id, c[key], format);
    setValue("queries-in-total", sum(Object.values(c.queries_received || {})));
    for (const key of ["infohashes", "peers", "items"]) setValue(`store-${key}`, (status.stores || {})[key]);
    setValue("queries-in-flight", sum(Object.values((status.queries || {}).in_flight || {})));
    renderSize(status.size_estimate || {});
    renderLookups(status.lookups || []);
  }

  function renderFamilies(families) {
    const names = Object.keys(families).sort();
    const key = names.join(",");
    const box = $("families");
    if (key !== state.familyKey) {
      state.familyKey = key;
      box.replaceChildren(...names.map((name) => {
        const list = el("dl", "kv");
        for (const [label, field, cls] of [["Node id", "node-id", "mono id"], ["Address", "address", "mono"],
          ["External IP", "external-ip"], ["Table", "table-summary"]]) {
          const dd = el("dd", cls);
          dd.id = `${field}-${name}`;
          list.append(el("dt", null, label), dd);
        }
        return el("div", "family", null, [el("h3", null, name === "ipv6" ? "IPv6" : "IPv4"), list]);
      }));
      if (!names.length) box.appendChild(el("p", "muted", "This node has no address family."));
    }
    for (const name of names) {
      const f = families[name] || {};
      const table = f.table || {};
      $(`node-id-${name}`).textContent = f.node_id || "–";
      $(`address-${name}`).textContent = f.address || "–";
      const ext = $(`external-ip-${name}`);
      ext.textContent = f.external_ip || "not known yet";
      ext.classList.toggle("muted", !f.external_ip);
      $(`table-summary-${name}`).textContent = `${plural(table.nodes, "node")}, ` +
        `${plural((table.buckets || []).length, "bucket")}, ${plural(table.replacements, "replacement")}`;
    }
    if (!names.includes(state.family)) state.family = names[0] || null;
    // A dual-stack node: one routing table per family, shown one at a time.
    const buttons = $("family-switch");
    buttons.hidden = names.length < 2;
    buttons.replaceChildren(...names.map((name) => {
      const button = el("button", "switch-button", name);
      button.type = "button";
      button.dataset.family = name;
      button.setAttribute("aria-pressed", String(name === state.family));
      return button;
    }));
    drawBuckets(state.family ? families[state.family].table || {} : {});
  }

  $("family-switch").addEventListener("click", (event) => {
    const family = event.target.dataset ? event.target.dataset.family : null;
    if (family) { state.family = family; render(); }
  });

  function renderSize(size) {
    const box = $("size-estimate");
    const detail = $("size-detail");
    if (!size.lookups) {
      box.textContent = "–";
      detail.textContent = "after the first lookups";
      return;
    }
    box.textContent = `≈ ${fmtInt(size.size)} nodes`;
    box.dataset.value = String(num(size.size));
    const parts = [];
    if (Array.isArray(size.interval95)) {
      parts.push(`95%: ${fmtInt(size.interval95[0])}–${fmtInt(size.interval95[1])}`);
    }
    parts.push(`from ${plural(size.lookups, "lookup")}`);
    detail.textContent = parts.join(" · ");
  }

  // Lookups in flight (from the status), then the last ones finished (from the events).
  function renderLookups(lookups) {
    const rows = [...lookups.map((l) => ({ ...l, running: true })), ...state.finished];
    $("lookups").hidden = !rows.length;
    $("lookups-empty").hidden = rows.length > 0;
    $("lookups-body").replaceChildren(...rows.map((lookup) => {
      const target = el("td", "mono", `${String(lookup.target || "").slice(0, 8)}…`);
      target.title = String(lookup.target || "");
      return el("tr", lookup.running ? "running" : null, null, [el("td", "kind", lookup.kind || "?"), target,
        el("td", "num", `${fmtInt(lookup.answered)}/${fmtInt(lookup.queried)}`),
        el("td", "num", fmtInt(lookup.peers)), el("td", "num", fmtSeconds(num(lookup.elapsed)))]);
    }));
  }

  // --- routing table chart -------------------------------------------------------------------

  function drawBuckets(table) {
    const chart = $("bucket-chart");
    const buckets = Array.isArray(table.buckets) ? table.buckets : [];
    for (const key of STATES) setValue(`count-${key}`, table[key]);
    setValue("count-nodes", table.nodes);
    setValue("count-buckets", buckets.length);
    const width = chartWidth(chart, 600);
    const height = 190;
    const m = { left: 34, right: 8, top: 16, bottom: 34 };
    const plotW = width - m.left - m.right;
    const plotH = height - m.top - m.bottom;
    clearSvg(chart, width, height);
    const totals = buckets.map((b) => sum(STATES.map((k) => b[k])));
    const yMax = niceCeil(Math.max(8, ...totals));
    const y = (v) => m.top + plotH - (v / yMax) * plotH;
    for (const tick of [0, yMax / 2, yMax]) {
      svg(chart, "line", { class: "grid", x1: m.left, x2: width - m.right, y1: y(tick), y2: y(tick) });
      svg(chart, "text", { class: "tick", x: m.left - 6, y: y(tick) + 4, "text-anchor": "end" }, tick);
    }
    const band = Math.min(plotW / Math.max(1, buckets.length), 56);
    const barW = Math.max(2, band * 0.72);
    const labelEvery = Math.max(1, Math.ceil(22 / band));
    buckets.forEach((bucket, i) => {
      const x = m.left + i * band + (band - barW) / 2;
      let base = 0;
      const group = svg(chart, "g", { class: "bucket" });
      svg(group, "title", {}, `bucket ${bucket.depth}: ${STATES.map((k) => `${num(bucket[k])} ${k}`).join(", ")}`);
      for (const key of STATES) {
        const count = num(bucket[key]);
        if (!count) continue;
        svg(group, "rect", { class: `bar st-${key}`, x: x.toFixed(1), width: barW.toFixed(1),
          y: y(base + count).toFixed(1), height: Math.max(0.5, y(base) - y(base + count)).toFixed(1) });
        base += count;
      }
      if (band >= 16 && totals[i]) {
        svg(chart, "text", { class: "bar-label", x: (x + barW / 2).toFixed(1), y: y(base) - 4,
          "text-anchor": "middle" }, totals[i]);
      }
      if (i % labelEvery === 0) {
        svg(chart, "text", { class: "tick", x: (x + barW / 2).toFixed(1), y: height - m.bottom + 15,
          "text-anchor": "middle" }, bucket.depth);
      }
    });
    svg(chart, "text", { class: "axis-title", x: m.left, y: height - 3 },
      "bucket depth (bits shared with the node id)");
    if (!buckets.length) {
      svg(chart, "text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" },
        "no routing table yet");
    }
  }

  // --- traffic chart -------------------------------------------------------------------------

  function methodOf(name) { return METHODS.includes(name) ? name : "other"; }

  function byMethod(counts) {
    const out = {};
    for (const [name, value] of Object.entries(counts || {})) {
      const key = methodOf(name);
      out[key] = (out[key] || 0) + num(value);
    }
    return out;
  }

  // Rates per method between consecutive samples of cumulative counters.
  function trafficRates(samples) {
    const points = [];
    for (let i = 1; i < samples.length; i += 1) {
      const a = samples[i - 1];
      const b = samples[i];
      const dt = num(b.t) - num(a.t);
      if (!(dt > 0)) continue;
      const point = { t0: num(a.t), t: num(b.t), in: {}, out: {} };
      for (const [side, field] of [["in", "queries_received"], ["out", "queries_sent"]]) {
        const before = byMethod(a[field]);
        const after = byMethod(b[field]);
        for (const key of Object.keys(after)) {
          point[side][key] = Math.max(0, (after[key] - (before[key] || 0)) / dt);
        }
      }
      points.push(point);
    }
    return points;
  }

  function drawTraffic(history) {
    const chart = $("traffic-chart");
    const samples = Array.isArray(history.samples) ? history.samples : [];
    const points = trafficRates(samples);
    const width = chartWidth(chart, 600);
    const height = 210;
    const m = { left: 40, right: 10, top: 12, bottom: 24 };
    const plotW = width - m.left - m.right;
    const half = (height - m.top - m.bottom) / 2;
    const mid = m.top + half;
    clearSvg(chart, width, height);
    const present = new Set();
    for (const p of points) for (const side of ["in", "out"]) {
      for (const [key, rate] of Object.entries(p[side])) if (rate > 0) present.add(key);
    }
    const methods = [...METHODS, "other"].filter((key) => present.has(key));
    const stackMax = Math.max(0, ...points.map((p) => Math.max(sum(Object.values(p.in)), sum(Object.values(p.out)))));
    const yMax = niceCeil(Math.max(1, stackMax));
    const tEnd = points.length ? points[points.length - 1].t : 0;
    const span = Math.max(60, points.length ? tEnd - points[0].t0 : 0);
    const x = (t) => m.left + plotW - ((tEnd - t) / span) * plotW;
    for (const [value, yy] of [[yMax, m.top], [yMax / 2, m.top + half / 2], [0, mid],
      [yMax / 2, mid + half / 2], [yMax, mid + half]]) {
      svg(chart, "line", { class: value ? "grid" : "axis", x1: m.left, x2: width - m.right, y1: yy, y2: yy });
      svg(chart, "text", { class: "tick", x: m.left - 6, y: yy + 4, "text-anchor": "end" },
        value ? `${fmtRate(value)}/s` : "0");
    }
    svg(chart, "text", { class: "side-label", x: m.left + 6, y: m.top + 12 }, "in ↑ received");
    svg(chart, "text", { class: "side-label", x: m.left + 6, y: mid + half - 5 }, "out ↓ sent");
    const minutes = Math.floor(span / 60);
    const every = Math.max(1, Math.ceil(minutes / Math.max(1, Math.floor(plotW / 70))));
    for (let k = 0; k <= minutes; k += every) {
      const xx = x(tEnd - k * 60);
      const anchor = !k ? "end" : xx - 24 < m.left ? "start" : "middle";
      svg(chart, "text", { class: "tick", x: xx, y: height - 6, "text-anchor": anchor }, k ? `−${k} min` : "now");
    }
    if (points.length < 2) {
      svg(chart, "text", { class: "empty", x: m.left + plotW / 2, y: mid - 8, "text-anchor": "middle" },
        "collecting samples…");
    }
    if (points.length >= 2) {
      for (const [side, sign] of [["in", -1], ["out", 1]]) {
        const base = points.map(() => 0);
        for (const key of methods) {
          const top = points.map((p, i) => base[i] + num(p[side][key]));
          const scale = (v) => mid + sign * (v / yMax) * half;
          // Steps: a rate holds over the interval between two samples.
          const steps = (values) => points.flatMap((p, i) => [[x(p.t0), scale(values[i])], [x(p.t), scale(values[i])]])
            .map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`);
          const upper = steps(top);
          const lower = steps(base).reverse();
          const area = svg(chart, "polygon", { class: `area m-${key}`, points: [...upper, ...lower].join(" ") });
          svg(area, "title", {}, `${key} ${side === "in" ? "received" : "sent"}`);
          top.forEach((v, i) => { base[i] = v; });
        }
      }
    }
    renderTrafficLegend(methods, recentRates(points, RECENT_SECONDS));
  }

  // Average rates per method over the last `seconds` (null without samples).
  function recentRates(points, seconds) {
    if (!points.length) return null;
    const end = points[points.length - 1].t;
    const recent = points.filter((p) => p.t0 >= end - seconds - 0.5);
    const used = recent.length ? recent : [points[points.length - 1]];
    const duration = sum(used.map((p) => p.t - p.t0));
    const out = { in: {}, out: {} };
    for (const p of used) for (const side of ["in", "out"]) {
      for (const [key, rate] of Object.entries(p[side])) {
        out[side][key] = (out[side][key] || 0) + (rate * (p.t - p.t0)) / duration;
      }
    }
    return out;
  }

  function renderTrafficLegend(methods, last) {
    const legend = $("traffic-legend");
    legend.replaceChildren();
    const current = last || { in: {}, out: {} };
    for (const key of methods) {
      legend.appendChild(el("li", null, null, [el("span", `swatch m-${key}`), `${key} `,
        el("span", "muted", `${fmtRate(num(current.in[key]))} in · ${fmtRate(num(current.out[key]))} out`)]));
    }
    if (!methods.length) legend.appendChild(el("li", "muted", "no queries in this window"));
    $("traffic-now").textContent = last
      ? `last ${RECENT_SECONDS} s: ${fmtRate(sum(Object.values(current.in)))}/s in · ` +
        `${fmtRate(sum(Object.values(current.out)))}/s out`
      : "";
  }

  // --- events (server-sent) ------------------------------------------------------------------

  function describeEvent(kind, data) {
    const node = data.node || {};
    switch (kind) {
      case "node_added": return `${node.address || "?"} joined the table (${shortHex(node.id || "")})`;
      case "node_removed": return `${node.address || "?"} left the table (${shortHex(node.id || "")})`;
      case "lookup_finished": {
        const s = data.summary || {};
        return `${data.lookup || "lookup"} ${shortHex(s.target || "")}: ${fmtInt(s.answered)}/` +
          `${fmtInt(s.queried)} answered, ${plural(s.peers, "peer")}, ` +
          fmtSeconds(num(s.elapsed));
      }
      case "external_ip_changed": return `external IP is now ${data.ip} (${fmtInt(data.voters)} voters)`;
      case "node_id_changed": return `node id ${shortHex(data.old || "")} → ${shortHex(data.new || "")} (${data.reason || "?"})`;
      case "error_received": return `error ${data.code} from ${data.source} to ${data.method}: ${data.message}`;
      case "dropped": return `${fmtInt(data.dropped)} events dropped by the server (page too slow)`;
      default: return JSON.stringify(data);
    }
  }

  function addEvent(kind, data) {
    if (kind === "lookup_finished" && data.summary) {
      state.finished = [{ ...data.summary, kind: data.lookup }, ...state.finished].slice(0, MAX_FINISHED);
      renderLookups(state.status ? state.status.lookups || [] : []);
    }
    const list = $("events");
    list.prepend(el("li", `event ev-${kind}`, null, [
      el("time", "muted mono", new Date().toLocaleTimeString("en-GB")),
      el("span", "event-kind", kind.replace(/_/g, " ")),
      el("span", "event-text", describeEvent(kind, data))]));
    while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
    $("events-empty").hidden = true;
  }

  let eventSource = null;
  let eventRetry = 0;

  function connectEvents() {
    if (!window.EventSource) { $("events-state").textContent = "not supported by this browser"; return; }
    clearTimeout(eventRetry);
    eventSource = new EventSource(`/api/events?kinds=${EVENT_KINDS.join(",")}`);
    eventSource.onopen = () => { $("events-state").textContent = "live"; };
    eventSource.onerror = () => {
      if (eventSource.readyState === EventSource.CLOSED) {
        // Refused (a full stream limit, a token): the browser gives up; try again later.
        $("events-state").textContent = "disconnected, retrying in 15 s";
        eventRetry = setTimeout(connectEvents, 15000);
      } else {
        $("events-state").textContent = "reconnecting…";
      }
    };
    for (const kind of [...EVENT_KINDS, "dropped"]) {
      eventSource.addEventListener(kind, (message) => {
        let data;
        try { data = JSON.parse(message.data); } catch (_) { return; }
        addEvent(kind, data && typeof data === "object" ? data : {});
      });
    }
  }

  // --- the lookup form -----------------------------------------------------------------------

  let lookupAbort = null;

  function lookupMessage(text, kind) {
    const box = $("lookup-message");
    box.textContent = text;
    box.className = `message${kind ? ` message-${kind}` : ""}`;
  }

  function parseInfohash(text) {
    const value = text.trim();
    const magnet = /xt=urn:btih:([0-9a-f]{40})(?:&|$)/i.exec(value);
    const hex = magnet ? magnet[1] : value.replace(/\s+/g, "");
    if (/^[0-9a-f]{40}$/i.test(hex)) return { infohash: hex.toLowerCase() };
    if (!hex) return { error: "Enter an infohash: 40 hex digits." };
    if (/[^0-9a-f]/i.test(hex)) return { error: "An infohash is 40 hex digits: only 0-9 and a-f." };
    return { error: `An infohash is 40 hex digits; this has ${hex.length}.` };
  }

  function renderSummary(summary, peersShown) {
    const box = $("lookup-summary");
    box.replaceChildren();
    if (!summary) { box.appendChild(el("p", "muted", "The lookup ended without a summary.")); return; }
    const list = el("dl", "stats compact");
    const rows = [["Peers", fmtInt(summary.peers)], ["Time", fmtSeconds(num(summary.elapsed))],
      ["First peer", fmtSeconds(summary.time_to_first_peer)], ["Queried", fmtInt(summary.queried)],
      ["Answered", fmtInt(summary.answered)], ["Timed out", fmtInt(summary.timed_out)]];
    if (summary.scrape) rows.push(["Seeds (est.)", fmtInt(summary.scrape.seeds)]);
    list.append(...rows.map(([label, value]) => el("div", null, null, [el("dt", null, label), el("dd", null, value)])));
    box.appendChild(list);
    lookupMessage(peersShown ? `Done: ${plural(peersShown, "peer")} found.`
      : "Done: no peers found.", peersShown ? "ok" : null);
  }

  async function runLookup(infohash) {
    if (lookupAbort) lookupAbort.abort();
    const abort = new AbortController();
    lookupAbort = abort;
    const peersList = $("lookup-peers");
    peersList.replaceChildren();
    $("lookup-summary").replaceChildren();
    const seen = new Set();
    let ended = false;
    lookupMessage(`Looking up ${shortHex(infohash)}…`, "busy");
    let response;
    try {
      response = await fetch(`/api/get-peers/${infohash}?timeout=${LOOKUP_TIMEOUT}`,
        { signal: abort.signal, cache: "no-store" });
    } catch (_) {
      if (!abort.signal.aborted) lookupMessage("The node does not answer: the lookup could not start.", "error");
      return;
    }
    if (!response.ok) {
      lookupMessage(`Refused (${response.status}): ${await errorMessage(response)}`, "error");
      return;
    }
    const handle = (item) => {
      if (typeof item.peer === "string") {
        if (seen.has(item.peer)) return;
        seen.add(item.peer);
        peersList.appendChild(el("li", "mono", item.peer));
        lookupMessage(`Looking up ${shortHex(infohash)}… ${plural(seen.size, "peer")} so far`, "busy");
      } else if ("summary" in item) {
        ended = true;
        renderSummary(item.summary, seen.size);
      } else if (typeof item.error === "string") {
        ended = true;
        lookupMessage(`The lookup failed: ${item.error}`, "error");
      }
    };
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (line) handle(JSON.parse(line));
        }
        if (done) break;
      }
      if (buffer.trim()) handle(JSON.parse(buffer));
      if (!ended) lookupMessage("The lookup stream ended without a result.", "error");
    } catch (error) {
      if (!abort.signal.aborted) lookupMessage(`The lookup stream broke off (${error.message}).`, "error");
    } finally {
      if (lookupAbort === abort) lookupAbort = null;
    }
  }

  $("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("lookup-input");
    const parsed = parseInfohash(input.value);
    input.setAttribute("aria-invalid", String(Boolean(parsed.error)));
    if (parsed.error) {
      lookupMessage(parsed.error, "error");
      input.focus();
      return;
    }
    runLookup(parsed.infohash);
  });

  // --- start ---------------------------------------------------------------------------------

  let resizeFrame = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(render);
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  poll();
  connectEvents();
})();
