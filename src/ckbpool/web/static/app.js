// The miners' page: every number comes from this pool's own API (/api/...); nothing is loaded from elsewhere.
"use strict";
(function () {
  const REFRESH_MS = 15000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function hashrate(hps) {
    const units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    let v = Number(hps) || 0, i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " " + units[i];
  }
  function ckb(shannons) {
    if (shannons === null || shannons === undefined) return "-";
    return (Number(shannons) / 1e8).toLocaleString(undefined, { maximumFractionDigits: 8 });
  }
  function ago(ts) {
    if (!ts) return "-";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function bigNumber(text) {
    if (text === null || text === undefined) return "-";
    const n = Number(text);
    if (n < 1e6) return String(text);
    const units = ["", "k", "M", "G", "T", "P", "E", "Z"];
    let v = n, i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return v.toFixed(2) + " " + units[i];
  }
  function setText(id, text) { const el = $(id); if (el) el.textContent = text; }
  function cell(row, text, cls, field) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (field) td.dataset.field = field;
    row.appendChild(td);
    return td;
  }
  function fillBlocks(tbody, blocks) {
    tbody.replaceChildren();
    for (const b of blocks) {
      const tr = document.createElement("tr");
      tr.dataset.hash = b.hash;
      cell(tr, String(b.height), "", "height");
      const h = cell(tr, b.hash, "hash", "hash");
      h.title = b.hash;
      cell(tr, b.status, "", "status");
      cell(tr, ckb(b.reward), "", "reward");
      cell(tr, ago(b.found_at), "", "found");
      tbody.appendChild(tr);
    }
    if (!blocks.length) {
      const tr = document.createElement("tr");
      const td = cell(tr, "none yet");
      td.colSpan = 5;
      tbody.appendChild(tr);
    }
  }
  function fillWorkers(tbody, workers) {
    tbody.replaceChildren();
    for (const w of workers) {
      const tr = document.createElement("tr");
      tr.dataset.worker = w.name;
      if (!w.online) tr.className = "offline";
      cell(tr, w.name, "", "name");
      cell(tr, hashrate(w.hashrate.h10m), "", "hashrate-10m").dataset.hps = String(w.hashrate.h10m);
      cell(tr, hashrate(w.hashrate.h1h), "", "hashrate-1h");
      cell(tr, hashrate(w.hashrate.h24h), "", "hashrate-24h");
      cell(tr, String(w.accepted), "", "accepted");
      cell(tr, String(w.rejected), "", "rejected");
      cell(tr, ago(w.last_share), "", "last-share");
      tbody.appendChild(tr);
    }
  }
  // SOLO mining (solo:<address>.<worker>) is its own section: fee-free, paid by the block itself, never mixed
  // into the PPLNS cards and tables; hidden for an address that never mined SOLO (the API answers null).
  function fillSolo(solo) {
    $("solo").hidden = !solo;
    $("solo-link").hidden = !solo;
    if (!solo) return;
    setText("solo-account", solo.account);
    setText("solo-hashrate-10m", hashrate(solo.hashrate.h10m));
    setText("solo-hashrate-1h", hashrate(solo.hashrate.h1h));
    setText("solo-hashrate-24h", hashrate(solo.hashrate.h24h));
    setText("solo-accepted", String(solo.accepted));
    setText("solo-rejected", String(solo.rejected));
    setText("solo-workers-online", `${solo.workers_online} of ${solo.workers.length}`);
    setText("solo-blocks-count", String(solo.blocks.length));
    fillWorkers(document.querySelector("#solo-workers tbody"), solo.workers);
    fillBlocks(document.querySelector("#solo-blocks tbody"), solo.blocks);
  }
  function chart(container, series) {
    const w = 600, h = 160, pad = 2, top = Math.max(...series, 0);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "hashrate per minute, last hour; peak " + hashrate(top));
    const scale = top > 0 ? (h - 2 * pad) / top : 0;
    const step = series.length > 1 ? (w - 2 * pad) / (series.length - 1) : 0;
    const pts = series.map((v, i) => `${(pad + i * step).toFixed(1)},${(h - pad - v * scale).toFixed(1)}`);
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("points", `${pad},${h - pad} ${pts.join(" ")} ${w - pad},${h - pad}`);
    area.setAttribute("fill", "#1f7a5c22");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#1f7a5c");
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(area, line);
    const label = document.createElement("span");
    label.className = "peak";
    label.textContent = "peak " + hashrate(top);
    container.replaceChildren(label, svg);
  }
  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const err = new Error(body.detail || `HTTP ${response.status}`);
      err.status = response.status;
      throw err;
    }
    return body;
  }
  function showError(text) {
    const el = $("error");
    el.textContent = text || "";
    el.hidden = !text;
  }
  function notes(list) { setText("notes", (list || []).join(" · ")); }

  async function loadPool() {
    const p = await getJSON("/api/pool");
    setText("pool-hashrate-10m", hashrate(p.hashrate.h10m));
    setText("pool-hashrate-1h", hashrate(p.hashrate.h1h));
    setText("pool-hashrate-24h", hashrate(p.hashrate.h24h));
    setText("pool-miners", String(p.miners_online));
    setText("pool-workers", String(p.workers_online));
    setText("network-height", p.network.height === null ? "-" : String(p.network.height));
    setText("network-difficulty", bigNumber(p.network.difficulty));
    // the exact figure (the text is rounded to 3 significant digits), for a tooltip and for readers of the DOM
    $("network-difficulty").dataset.value = p.network.difficulty === null ? "" : String(p.network.difficulty);
    $("network-difficulty").title = p.network.difficulty === null ? "" : String(p.network.difficulty);
    setText("pool-scheme", p.payout_scheme ? `${p.payout_scheme}, fee ${p.fee_percent}%` : "-");
    chart($("pool-chart"), p.history.minutes);
    fillBlocks(document.querySelector("#pool-blocks tbody"), p.blocks);
    notes(p.notes);
    $("overview").hidden = false;
  }

  async function loadAccount(address) {
    let a;
    try {
      a = await getJSON("/api/address/" + encodeURIComponent(address));
    } catch (err) {
      $("account").hidden = true;
      showError(err.status === 404 ? "No shares from this address yet. " + err.message : err.message);
      return;
    }
    showError("");
    setText("account-address", a.address);
    setText("account-hashrate-10m", hashrate(a.hashrate.h10m));
    setText("account-hashrate-1h", hashrate(a.hashrate.h1h));
    setText("account-hashrate-24h", hashrate(a.hashrate.h24h));
    setText("account-accepted", String(a.accepted));
    setText("account-rejected", String(a.rejected));
    setText("account-workers-online", `${a.workers_online} of ${a.workers.length}`);
    setText("account-immature", a.balance ? ckb(a.balance.immature) : "-");
    setText("account-payable", a.balance ? ckb(a.balance.payable) : "-");
    chart($("account-chart"), a.history.minutes);
    fillWorkers(document.querySelector("#workers tbody"), a.workers);
    fillBlocks(document.querySelector("#account-blocks tbody"), a.blocks);
    fillSolo(a.solo);
    const pays = document.querySelector("#payments tbody");
    pays.replaceChildren();
    for (const p of a.payments || []) {
      const tr = document.createElement("tr");
      cell(tr, p.tx_hash, "hash", "tx");
      cell(tr, ckb(p.amount), "", "amount");
      cell(tr, p.status, "", "status");
      pays.appendChild(tr);
    }
    notes(a.notes);
    $("account").hidden = false;
  }

  function currentAddress() {
    const m = location.pathname.match(/^\/address\/([^/]+)\/?$/);
    if (m) return decodeURIComponent(m[1]);
    return new URLSearchParams(location.search).get("address");
  }

  async function refresh() {
    const address = currentAddress();
    try {
      if (address) {
        $("overview").hidden = true;
        await loadAccount(address);
      } else {
        await loadPool();
        showError("");
      }
      setText("updated", new Date().toLocaleTimeString());
      document.body.dataset.loaded = String(Date.now());
    } catch (err) {
      showError("The pool's figures cannot be read right now: " + err.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const address = currentAddress();
    if (address) $("search-address").value = address;
    $("search").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("search-address").value.trim();
      location.href = value ? "/address/" + encodeURIComponent(value) : "/";
    });
    refresh();
    setInterval(refresh, REFRESH_MS);
  });
})();
