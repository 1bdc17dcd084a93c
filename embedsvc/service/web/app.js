// The embedsvc page: plain JavaScript over the HTTP API, no build step. Every call carries the
// token from the box in the header (kept in this browser's localStorage) when one is given.
// Text from the server goes into the page as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, text: null, views: ["try", "heads", "maps"], map: null };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- the API -----------------------------------------------------------------------------------
function headers(extra = {}) {
  const token = $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, body, method) {
  const init = { method: method || (body === undefined ? "GET" : "POST"), headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    if (response.status === 401) message = "this server needs a token: enter it at the top right";
    throw new Error(message);
  }
  return response.json();
}

// An image the API serves (a thumbnail, a figure) as an <img>: fetched with the token, since
// an <img src> cannot send one.
async function apiImage(path, alt) {
  const img = el("img", { alt });
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  img.src = URL.createObjectURL(await response.blob());
  return img;
}

function showError(error) {
  const box = $("alert");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

async function guarded(work) {
  try { showError(null); return await work(); } catch (error) { showError(error); }
}

function fillSelect(select, names, none) {
  const keep = select.value;
  select.replaceChildren(...(names.length ? names : [none]).map((n) => el("option", { text: n })));
  if (!names.length) select.firstChild.value = "";
  if (names.includes(keep)) select.value = keep;
}

async function loadChoices() {
  const [heads, indexes, info] = await Promise.all([api("/v1/heads"), api("/v1/indexes"),
                                                    api("/v1/info")]);
  state.heads = heads.heads;
  // the user's own heads first: the page opens on the first trained one, ImageNet's last
  const usable = heads.heads.filter((h) => h.available);
  const trained = usable.filter((h) => h.kind !== "imagenet").concat(
    usable.filter((h) => h.kind === "imagenet"));
  const before = $("head").value;
  fillSelect($("head"), trained.map((h) => h.name), "(none)");
  if ($("head").value && $("head").value !== before) await useHeadThreshold();
  const names = indexes.indexes.map((i) => i.name);
  fillSelect($("index"), names, "(no index)");
  fillSelect($("map-index"), names, "(no index)");
  $("server").textContent = `${info.default_backbone} on ${info.device} · v${info.version}`;
}

async function useHeadThreshold() {
  // each head says which OOD threshold it can resolve (head.json's ood.default_max_ood)
  const info = await api(`/v1/heads/${encodeURIComponent($("head").value)}`);
  if (info.ood && info.ood.default_max_ood) $("max-ood").value = info.ood.default_max_ood;
}

// -- try an image ----------------------------------------------------------------------------
function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function takeFile(file) {
  if (!file || !file.type.startsWith("image/")) throw new Error("that is not an image file");
  state.image = await readAsDataURL(file);
  state.text = null;
  $("preview").src = state.image;
  $("preview").hidden = false;
  await analyse();
}

// What the page sends for the image or the text it holds: the API's typed forms.
function query() {
  if (state.text !== null) {
    return { embed: state.text, input: { id: "text", text: state.text } };
  }
  return { embed: { image: state.image }, input: { id: "upload", image: state.image } };
}

async function analyse() {
  if (!state.image && state.text === null) return;
  const head = $("head").value, index = $("index").value;
  const abstain = parseFloat($("abstain").value) || null;
  const maxOod = parseFloat($("max-ood").value) || null;
  const k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 8));
  const q = query();
  const jobs = [api("/v1/embeddings", { model: "", input: [q.embed] }).then(showEmbedding)];
  if (head) {
    jobs.push(api("/v1/classify", { inputs: [q.input], head,
                                   top_k: 5, abstain_below: abstain,
                                   max_ood_score: maxOod }).then(showClassification));
  }
  if (index) {
    jobs.push(api("/v1/search", { index, input: q.input, k })
      .then((answer) => showNeighbours(index, answer.hits)));
  }
  const failed = (await Promise.allSettled(jobs)).find((r) => r.status === "rejected");
  showError(failed ? failed.reason : null);
}

function showEmbedding(answer) {
  const vector = answer.data[0].embedding;
  const box = $("embedding");
  const strip = el("canvas", { class: "strip", width: String(vector.length), height: "1" });
  const ctx = strip.getContext("2d");
  const peak = Math.max(...vector.map(Math.abs)) || 1;
  vector.forEach((v, i) => {  // blue: negative, red: positive
    const a = Math.min(1, Math.abs(v) / peak);
    ctx.fillStyle = v >= 0 ? `rgba(194,65,12,${a})` : `rgba(47,111,222,${a})`;
    ctx.fillRect(i, 0, 1, 1);
  });
  box.replaceChildren(el("h3", { text: "Embedding" }), strip,
    el("p", { class: "muted", text: `${vector.length}-d vector from ${answer.model} ` +
      `(${answer.provenance.tap}${answer.provenance.normalized ? ", L2-normalised" : ""}) in ` +
      `${answer.timing.total_ms.toFixed(1)} ms` }));
  box.hidden = false;
}

function bar(label, value, cls = "") {
  const fill = el("div", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
  return el("div", { class: `bar ${cls}` }, el("span", { text: label }),
            el("div", { class: "track" }, fill), el("span", { text: value.toFixed(3) }));
}

function showClassification(answer) {
  const r = answer.results[0];
  const box = $("classification");
  const verdict = el("div", { class: `verdict${r.abstained ? " unknown" : ""}`, id: "label",
                              text: r.abstained ? `unknown (best guess ${r.top[0].label})`
                                                : r.label });
  box.replaceChildren(el("h3", { text: `Head ${answer.head}` }), verdict,
                      ...r.top.map((t) => bar(t.label, t.probability)),
                      bar("out-of-distribution", r.ood_score, "ood"));
  box.hidden = false;
}

async function showNeighbours(index, hits) {
  const box = $("neighbours");
  const tiles = await Promise.all(hits.map(async (hit) => {
    const label = hit.metadata.label || "";
    let picture = el("div", { class: "noimg", text: "no thumbnail" });
    if (hit.metadata.text !== undefined) {  // a text item: its text, as text
      picture = el("blockquote", { class: "hit-text", text: hit.metadata.text });
    } else if (hit.thumbnail) {
      picture = await apiImage(`/v1/indexes/${encodeURIComponent(index)}/items/${hit.id}/thumbnail`,
                               label || `#${hit.id}`).catch(() => picture);
    }
    return el("div", { class: "neighbour" }, picture, el("div", { text: label || `#${hit.id}` }),
              el("div", { class: "muted", text: `id ${hit.id} · ${hit.score.toFixed(3)}` }));
  }));
  box.replaceChildren(el("h3", { text: `Nearest in ${index}` }),
                      hits.length ? el("div", { class: "grid" }, ...tiles)
                                  : el("p", { class: "muted", text: "the index is empty" }));
  box.hidden = false;
}

function setUpDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => guarded(() => takeFile(e.target.files[0])));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    guarded(() => takeFile(e.dataTransfer.files[0]));
  });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) guarded(() => takeFile(item.getAsFile()));
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    state.text = text;
    state.image = null;
    $("preview").hidden = true;
    guarded(analyse);
  });
  $("head").addEventListener("change", () => guarded(async () => {
    await useHeadThreshold();
    await analyse();
  }));
  for (const id of ["index", "k", "abstain", "max-ood"]) {
    $(id).addEventListener("change", () => guarded(analyse));
  }
}

// -- heads -----------------------------------------------------------------------------------
async function showHeads(name) {
  const list = $("head-list"), report = $("head-report");
  list.hidden = Boolean(name);
  report.hidden = !name;
  if (!name) {
    const { heads } = await api("/v1/heads");
    list.replaceChildren(...heads.map((h) => el("div", { class: "card" },
      el("h3", {}, el("a", { href: `#/heads/${encodeURIComponent(h.name)}`, text: h.name })),
      el("div", { class: "muted", text: h.available ? `${h.kind} on ${h.backbone}, ` +
        `${h.classes.length || "ImageNet's"} classes` : `unavailable: ${h.error}` }))));
    return;
  }
  const [info, drift] = await Promise.all([api(`/v1/heads/${encodeURIComponent(name)}`),
    api(`/v1/drift?head=${encodeURIComponent(name)}`)]);
  const metrics = Object.entries(info.metrics).map(([k, v]) =>
    el("tr", {}, el("td", { text: k }), el("td", { text: typeof v === "number" && !Number.isInteger(v)
                                                            ? v.toFixed(4) : String(v) })));
  const figures = await Promise.all(info.figures.map((f) =>
    apiImage(`/v1/heads/${encodeURIComponent(name)}/figures/${f}`, f)));
  const d = drift.heads[0];
  const driftText = d.verdict === "stable" || d.verdict === "drifted"
    ? `${d.verdict}: MMD² ${d.mmd2.toFixed(4)} vs threshold ${d.threshold.toFixed(4)} ` +
      `(p = ${d.p_value.toFixed(3)}, ${d.window} recent inputs, ${d.reference} training)`
    : `${d.verdict} (${d.window} recent inputs)`;
  const about = info.note || `${info.classes.length} classes · ${info.features.dim}-d ` +
    `${info.features.tap} features · OOD: ${info.ood_method}` +
    (info.training.train_examples ? ` · ${info.training.train_examples} training examples` : "");
  report.replaceChildren(
    el("p", {}, el("a", { href: "#/heads", text: "← all heads" })),
    el("h2", { text: `${info.name}: ${info.kind} head on ${info.backbone}` }),
    el("p", { class: "muted", text: about }),
    el("div", { class: "cards" },
       el("div", { class: "card" }, el("h3", { text: "Held-out metrics" }),
          el("table", {}, ...metrics)),
       el("div", { class: "card", id: "drift" }, el("h3", { text: "Drift of live inputs" }),
          el("p", { text: driftText }))),
    el("div", { class: "figures" }, ...figures));
}

// -- maps ------------------------------------------------------------------------------------
const PALETTE = ["#2f6fde", "#c2410c", "#15803d", "#9333ea", "#ca8a04", "#0891b2", "#db2777",
                 "#4b5563", "#65a30d", "#7c2d12", "#1e3a8a", "#be123c"];

async function showMap() {
  const index = $("map-index").value;
  if (!index) { $("map-info").textContent = "no index to map yet: upsert some images"; return; }
  const limit = parseInt($("map-limit").value, 10) || 2000;
  const m = await api(`/v1/indexes/${encodeURIComponent(index)}/map?limit=${limit}`);
  const labels = [...new Set(m.points.map((p) => p.label))].sort();
  const colour = (label) => PALETTE[labels.indexOf(label) % PALETTE.length];
  state.map = { ...m, colour };
  $("map-info").textContent = `${m.shown} of ${m.count} vectors, PCA (explained ` +
    `${m.explained_variance.map((v) => (100 * v).toFixed(1) + "%").join(" + ")})`;
  $("map-legend").replaceChildren(...labels.map((label) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = colour(label);
    return el("div", { class: "legend-item" }, swatch, el("span", { text: label || "(no label)" }));
  }));
  drawMap();
}

function mapScale() {
  const { points } = state.map, canvas = $("map-canvas"), pad = 16;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (canvas.width - 2 * pad) / ((x1 - x0) || 1), sy = (canvas.height - 2 * pad) / ((y1 - y0) || 1);
  return (p) => [pad + (p.x - x0) * sx, canvas.height - pad - (p.y - y0) * sy];
}

function drawMap() {
  const canvas = $("map-canvas"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.map || !state.map.points.length) return;
  const at = mapScale();
  for (const p of state.map.points) {
    const [x, y] = at(p);
    ctx.fillStyle = state.map.colour(p.label);
    ctx.globalAlpha = 0.75;
    ctx.beginPath();
    ctx.arc(x, y, 3.5, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.globalAlpha = 1;
}

async function pickPoint(event) {
  if (!state.map || !state.map.points.length) return;
  const canvas = $("map-canvas"), rect = canvas.getBoundingClientRect();
  const cx = (event.clientX - rect.left) * canvas.width / rect.width;
  const cy = (event.clientY - rect.top) * canvas.height / rect.height;
  const at = mapScale();
  let best = null, bestD = Infinity;
  for (const p of state.map.points) {
    const [x, y] = at(p), d = (x - cx) ** 2 + (y - cy) ** 2;
    if (d < bestD) { best = p; bestD = d; }
  }
  if (bestD > 144) return;  // farther than 12 px from every point
  const box = $("map-point");
  const picture = best.thumbnail
    ? await apiImage(`/v1/indexes/${encodeURIComponent(state.map.index)}/items/${best.id}/thumbnail`,
                     best.label)
    : el("p", { class: "muted", text: "no thumbnail" });
  box.replaceChildren(el("h3", { text: `#${best.id} ${best.label}` }), picture,
    el("table", {}, ...Object.entries(best.metadata).map(([k, v]) =>
      el("tr", {}, el("td", { text: k }), el("td", { text: v })))));
  box.hidden = false;
}

// -- routing ---------------------------------------------------------------------------------
async function route() {
  const [view, arg] = location.hash.replace(/^#\/?/, "").split("/");
  const name = state.views.includes(view) ? view : "try";
  for (const v of state.views) $(`view-${v}`).hidden = v !== name;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active",
                                                                       a.dataset.view === name));
  await loadChoices();
  if (name === "heads") await showHeads(arg ? decodeURIComponent(arg) : "");
  if (name === "maps") {
    if (arg) $("map-index").value = decodeURIComponent(arg);
    await showMap();
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("token").value = localStorage.getItem("embedsvc-token") || "";
  $("token").addEventListener("change", () => {
    localStorage.setItem("embedsvc-token", $("token").value.trim());
    guarded(route);
  });
  setUpDrop();
  $("map-index").addEventListener("change", () => guarded(showMap));
  $("map-limit").addEventListener("change", () => guarded(showMap));
  $("map-canvas").addEventListener("click", (e) => guarded(() => pickPoint(e)));
  window.addEventListener("hashchange", () => guarded(route));
  guarded(route);
});
