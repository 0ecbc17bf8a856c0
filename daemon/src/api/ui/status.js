// qkeyd's status page: polls /v1/status on this origin and updates the page
// in place (so keyboard focus stays where it is). No library, no other origin.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let paused = false;
  let chosen = null;
  let timer = null;
  let latest = null;

  // ---- small helpers -----------------------------------------------------

  function setText(node, value) {
    const t = String(value);
    if (node.textContent !== t) node.textContent = t;
  }

  function fixed(x, digits) {
    return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
  }

  function count(x) {
    return typeof x === "number" ? Math.round(x).toLocaleString("en-US") : "–";
  }

  function age(seconds) {
    if (typeof seconds !== "number") return "–";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(1)} s`;
    return `${Math.round(seconds / 60)} min`;
  }

  function clock(unix) {
    return new Date(unix * 1000).toLocaleTimeString("en-GB", { hour12: false });
  }

  /** Metric samples named `name` (optionally matching `labels`). */
  function samples(s, name, labels) {
    return s.metrics.filter((m) => m.name === name &&
      Object.entries(labels || {}).every(([k, v]) => m.labels[k] === v));
  }

  function sum(list) {
    return list.reduce((a, m) => a + m.value, 0);
  }

  /** A <dl> filled from [term, value, class?] rows, rebuilt only when it changed. */
  function fillList(dl, rows) {
    const key = JSON.stringify(rows);
    if (dl.dataset.key === key) return;
    dl.dataset.key = key;
    dl.replaceChildren();
    for (const [term, value, cls] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      if (cls) dd.className = cls;
      dl.append(dt, dd);
    }
  }

  /** A <tbody> filled from rows of cells ([text, className?]), rebuilt only when it changed. */
  function fillRows(tbody, rows) {
    const key = JSON.stringify(rows);
    if (tbody.dataset.key === key) return;
    tbody.dataset.key = key;
    tbody.replaceChildren();
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const [value, cls] of cells) {
        const td = document.createElement("td");
        td.textContent = value;
        if (cls) td.className = cls;
        tr.append(td);
      }
      tbody.append(tr);
    }
  }

  // ---- the pool's mode ---------------------------------------------------

  function renderMode(s) {
    const box = $("mode");
    const pool = s.pool;
    const healthy = pool.sources.filter((x) => x.state === "healthy").length;
    let mode;
    let title;
    let detail;
    if (pool.serving === "sources") {
      mode = "sources";
      title = "Serving from health-tested sources";
      detail = `${healthy} of ${pool.sources.length} sources healthy.`;
    } else if (pool.serving === "os-fallback") {
      mode = "os-fallback";
      title = "OS FALLBACK";
      detail = "No source is healthy: bytes are seeded from the operating system, not from hardware entropy.";
    } else if (pool.mode === "fail-closed") {
      mode = "fail-closed";
      title = "FAIL-CLOSED";
      detail = "No source is healthy: qkeyd refuses to serve random bytes and to make keys.";
    } else {
      mode = "none";
      title = "Not serving";
      detail = "The pool has no seed yet.";
    }
    box.dataset.mode = mode;
    setText($("mode-title"), title);
    setText($("mode-detail"), detail);
  }

  // ---- sources -------------------------------------------------------------

  function renderSources(s) {
    const tbody = $("source-rows");
    const names = s.pool.sources.map((x) => x.name);
    if (chosen === null || !names.includes(chosen)) chosen = names[0] ?? null;
    // Rows are made once per source and updated in place.
    if (tbody.dataset.names !== names.join("\n")) {
      tbody.dataset.names = names.join("\n");
      tbody.replaceChildren();
      const select = $("chart-source");
      select.replaceChildren();
      for (const name of names) {
        const tr = document.createElement("tr");
        tr.dataset.source = name;
        const first = document.createElement("td");
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = name;
        button.title = `Chart ${name}'s trust and drift`;
        button.addEventListener("click", () => choose(name));
        first.append(button);
        tr.append(first);
        for (const field of ["kind", "state", "trust", "drift", "rct", "apt", "samples", "age", "seeds"]) {
          const td = document.createElement("td");
          td.dataset.field = field;
          if (!["kind", "state"].includes(field)) td.className = "num";
          tr.append(td);
        }
        tbody.append(tr);
        const option = document.createElement("option");
        option.value = name;
        option.textContent = name;
        select.append(option);
      }
    }
    for (const src of s.pool.sources) {
      const tr = tbody.querySelector(`tr[data-source="${CSS.escape(src.name)}"]`);
      if (!tr) continue;
      tr.dataset.state = src.state;
      tr.setAttribute("aria-current", String(src.name === chosen));
      const cell = (f) => tr.querySelector(`td[data-field="${f}"]`);
      setText(cell("kind"), src.kind);
      let badge = cell("state").firstElementChild;
      if (!badge) {
        badge = document.createElement("span");
        cell("state").append(badge);
      }
      badge.className = `badge state-${src.state}`;
      setText(badge, src.state);
      setText(cell("trust"), fixed(src.trust_score, 3));
      cell("trust").className = "num " + (src.trust_score < src.min_trust ? "err" : "");
      setText(cell("drift"), fixed(src.drift_score, 3));
      setText(cell("rct"), count(src.rct_failures));
      setText(cell("apt"), count(src.apt_failures));
      setText(cell("samples"), count(src.samples));
      setText(cell("age"), age(src.sample_age_secs));
      setText(cell("seeds"), count(src.seeds_used));
    }
    $("chart-source").value = chosen ?? "";
  }

  function choose(name) {
    chosen = name;
    if (latest) {
      renderSources(latest);
      renderChart(latest);
    }
  }

  // ---- the chart -------------------------------------------------------------

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderChart(s) {
    const chart = $("chart");
    const W = 720, H = 260, L = 40, R = 10, T = 10, B = 24;
    const src = s.pool.sources.find((x) => x.name === chosen);
    const points = (chosen && s.history[chosen]) || [];
    const minTrust = src ? src.min_trust : 0.89;
    const nodes = [];
    const y = (v) => T + (1 - v) * (H - T - B);
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      nodes.push(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      nodes.push(svg("text", { class: "axis", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(2)));
    }
    const t1 = s.now_unix;
    const t0 = points.length ? Math.min(points[0][0], t1 - 60) : t1 - 60;
    const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
    nodes.push(svg("text", { class: "axis", x: L, y: H - 6 }, clock(t0)));
    nodes.push(svg("text", { class: "axis", x: W - R, y: H - 6, "text-anchor": "end" }, clock(t1)));
    nodes.push(svg("line", { class: "limit", x1: L, x2: W - R, y1: y(minTrust), y2: y(minTrust) }));
    nodes.push(svg("text", { class: "limit-label", x: W - R - 4, y: y(minTrust) - 4, "text-anchor": "end" },
      `minimum trust ${minTrust.toFixed(2)}`));
    if (points.length) {
      const path = (i) => points.map((p) => `${x(p[0]).toFixed(1)},${y(p[i]).toFixed(1)}`).join(" ");
      nodes.push(svg("polyline", { class: "drift", points: path(2) }));
      nodes.push(svg("polyline", { class: "trust", points: path(3) }));
    }
    chart.replaceChildren(...nodes);
    const desc = $("chart-desc");
    if (!src) {
      setText(desc, "No source is configured.");
    } else if (!points.length) {
      setText(desc, `${src.name}: no drift window has closed yet.`);
    } else {
      const p = points[points.length - 1];
      const below = p[3] < minTrust ? ", below the minimum" : "";
      setText(desc, `${src.name}: trust ${p[3].toFixed(3)}${below}, drift ${p[2].toFixed(3)} at ${clock(p[0])}; ` +
        `${points.length} windows since ${clock(points[0][0])}. Minimum trust ${minTrust.toFixed(2)}.`);
    }
  }

  // ---- DRBG, keys, KMS, clients, links ------------------------------------------

  function renderDrbg(s) {
    const d = s.pool.drbg;
    fillList($("drbg-list"), [
      ["Instantiated", d.instantiated ? "yes" : "no", d.instantiated ? "ok" : "warn"],
      ["Seeds (instantiations and reseeds)", count(d.seeds)],
      ["Reseed counter", count(d.reseed_counter)],
      ["Seed age", age(d.seed_age_secs)],
      ["Seeded by", d.seeded_by ?? "–", d.seeded_by === "os-fallback" ? "warn" : ""],
    ]);
  }

  function renderKeys(s) {
    const up = samples(s, "qkeyd_sealer_up");
    let line = s.sealer ? `Sealer: ${s.sealer}` : "The key vault is off.";
    if (up.length) line += up[0].value === 1 ? " (answering)" : " (NOT ANSWERING)";
    const p = $("sealer-line");
    setText(p, line);
    p.className = up.length && up[0].value !== 1 ? "err" : "";
    const rows = samples(s, "qkeyd_keys")
      .filter((m) => m.value > 0)
      .sort((a, b) => (a.labels.algorithm + a.labels.sealer).localeCompare(b.labels.algorithm + b.labels.sealer))
      .map((m) => [[m.labels.algorithm], [m.labels.sealer], [count(m.value), "num"]]);
    if (!rows.length) rows.push([["no keys"], [""], ["0", "num"]]);
    fillRows($("key-rows"), rows);
    const ops = samples(s, "qkeyd_key_operations_total");
    const ok = sum(ops.filter((m) => m.labels.outcome === "ok"));
    const client = sum(ops.filter((m) => m.labels.outcome === "client_error"));
    const server = sum(ops.filter((m) => m.labels.outcome === "server_error"));
    setText($("key-ops"), `Key operations since start: ${count(ok)} ok, ${count(client)} refused or invalid, ${count(server)} failed.`);
  }

  function renderKms(s) {
    const k = s.kms;
    if (!k) {
      fillList($("kms-list"), [["State", "not enabled"]]);
      return;
    }
    const rows = [
      ["Backend", k.backend],
      ["Write key id hash", k.write_key_id_hash ?? "no write key yet", k.write_key_id_hash ? "" : "err"],
      ["KEKs", count(k.keks)],
    ];
    const c = k.last_check;
    if (c) {
      rows.push(["Status", c.ok ? "ok" : "FAILING", c.ok ? "ok" : "err"]);
      rows.push(["Last Status check", `${clock(c.at_unix)}, round trip ${(c.seconds * 1000).toFixed(1)} ms`]);
    } else {
      rows.push(["Status", "not checked yet"]);
    }
    for (const method of ["Status", "Encrypt", "Decrypt"]) {
      const calls = samples(s, "qkeyd_kms_requests_total", { method });
      const total = sum(calls);
      if (!total) continue;
      const failed = total - sum(calls.filter((m) => m.labels.code === "OK"));
      const n = sum(samples(s, "qkeyd_kms_request_duration_seconds_count", { method }));
      const t = sum(samples(s, "qkeyd_kms_request_duration_seconds_sum", { method }));
      const mean = n ? `, mean ${(t / n * 1000).toFixed(2)} ms` : "";
      rows.push([method, `${count(total)} calls, ${count(failed)} failed${mean}`, failed ? "warn" : ""]);
    }
    fillList($("kms-list"), rows);
  }

  function renderClients(s) {
    const m = samples(s, "qkeyd_module_clients");
    setText($("module-clients"), m.length ? count(m[0].value) : "–");
  }

  function renderLinks(s) {
    // TLS: successful handshakes by group, post-quantum or classical.
    const ok = samples(s, "qkeyd_tls_handshakes_total", { outcome: "success" });
    const byGroup = new Map();
    for (const m of ok) byGroup.set(m.labels.group, (byGroup.get(m.labels.group) || 0) + m.value);
    const pq = (g) => /mlkem|kyber/i.test(g);
    const total = [...byGroup.values()].reduce((a, b) => a + b, 0);
    const pqTotal = [...byGroup].filter(([g]) => pq(g)).reduce((a, [, v]) => a + v, 0);
    if (!s.tls) {
      setText($("tls-line"), "TLS is off (plain HTTP on loopback).");
    } else if (!total) {
      setText($("tls-line"), "No handshake yet.");
    } else {
      setText($("tls-line"), `${count(pqTotal)} of ${count(total)} handshakes post-quantum (${(100 * pqTotal / total).toFixed(1)} %).`);
    }
    $("tls-table").hidden = !total;
    fillRows($("tls-rows"), [...byGroup].sort().map(([g, v]) =>
      [[g], [pq(g) ? "post-quantum" : "classical", pq(g) ? "ok" : "warn"], [count(v), "num"]]));
    // QKD links.
    const links = samples(s, "qkeyd_qkd_link_trust");
    $("qkd-table").hidden = !links.length;
    setText($("qkd-line"), links.length ? "" : "No QKD link is configured.");
    fillRows($("qkd-rows"), links.map((m) => {
      const kme = m.labels.kme;
      const out = samples(s, "qkeyd_qkd_link_out_of_use", { kme });
      const down = out.length && out[0].value === 1;
      const usable = sum(samples(s, "qkeyd_qkd_link_keys_total", { kme, outcome: "usable" }));
      return [[kme], [down ? "out of use" : "in use", down ? "err" : "ok"], [fixed(m.value, 3), "num"], [count(usable), "num"]];
    }));
    // Attestation and the KEKs shared between control-plane nodes.
    let line = s.attest ? "Attested keys: on." : "Attested keys: off.";
    if (s.cluster) {
      const etcd = samples(s, "qkeyd_kms_cluster_etcd_up");
      const admitted = sum(samples(s, "qkeyd_kms_cluster_nodes", { state: "admitted" }));
      const refused = sum(samples(s, "qkeyd_kms_cluster_nodes", { state: "refused" }));
      line += ` Shared KEKs: etcd ${etcd.length && etcd[0].value === 1 ? "reachable" : "UNREACHABLE"}, ` +
        `${count(admitted)} nodes admitted, ${count(refused)} refused.`;
    }
    setText($("attest-line"), line);
  }

  function render(s) {
    latest = s;
    setText($("version"), s.version);
    renderMode(s);
    renderSources(s);
    renderChart(s);
    renderDrbg(s);
    renderKeys(s);
    renderKms(s);
    renderClients(s);
    renderLinks(s);
    setText($("updated"), `updated ${clock(s.now_unix)}`);
    document.body.dataset.loaded = "true";
  }

  // ---- polling, theme, keys --------------------------------------------------

  async function refresh() {
    try {
      const r = await fetch("/v1/status", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      render(await r.json());
      $("unreachable").hidden = true;
    } catch (e) {
      $("unreachable").hidden = false;
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (!paused) timer = setTimeout(async () => { await refresh(); schedule(); }, REFRESH_MS);
  }

  function setPaused(p) {
    paused = p;
    const b = $("pause");
    b.setAttribute("aria-pressed", String(p));
    setText(b, p ? "Resume" : "Pause");
    schedule();
  }

  function setTheme(dark) {
    document.documentElement.dataset.theme = dark ? "dark" : "light";
    const b = $("theme");
    b.setAttribute("aria-pressed", String(dark));
    try { localStorage.setItem("qkeyd-theme", dark ? "dark" : "light"); } catch (e) { /* storage off */ }
  }

  function start() {
    let saved = null;
    try { saved = localStorage.getItem("qkeyd-theme"); } catch (e) { /* storage off */ }
    setTheme(saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches);
    $("theme").addEventListener("click", () => setTheme(document.documentElement.dataset.theme !== "dark"));
    $("pause").addEventListener("click", () => setPaused(!paused));
    $("chart-source").addEventListener("change", (e) => choose(e.target.value));
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName)) return;
      if (e.key === "p") setPaused(!paused);
      else if (e.key === "d") setTheme(document.documentElement.dataset.theme !== "dark");
      else if (e.key === "r") refresh();
    });
    refresh().then(schedule);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
