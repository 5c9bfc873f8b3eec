// The search page: a search box (or an image upload), hits, a document view and the
// collection's map. State lives in the address's fragment (#q=..., #similar=..., #doc=...),
// so every view can be linked to and the back button works. Data is always inserted as
// text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
  "#c7c7c7", "#dbdb8d", "#9edae5"];
const state = { info: null, map: null, marks: { hits: new Set(), query: null, item: null } };

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);  // also a body cut short
  if (!response.ok) throw new Error((body && body.detail) || `HTTP ${response.status}`);
  if (body === null) throw new Error(`${path.split("?")[0]}: the server's answer was not JSON`);
  return body;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const isImages = () => state.info && state.info.collection === "image";
const fragment = (key, value) => `#${key}=${encodeURIComponent(value)}`;

// The results area emptied (hits, images, document) and the map's marks cleared.
function clearResults() {
  $("document").hidden = true;
  $("hits").replaceChildren();
  $("montage").replaceChildren();
  mark({ hits: [], query: null, item: null });
}

// A failed request: its one line, and no results of an earlier request under it.
function failed(error) {
  clearResults();
  status(error.message, true);
}

// ------------------------------------------------------------------------- views
function showHits(hits, heading) {
  $("document").hidden = true;
  $("hits").replaceChildren();
  $("montage").replaceChildren();
  status(hits.length ? heading : "No results.");
  if (isImages()) return showMontage(hits);
  for (const hit of hits) {
    const title = element("a", { class: "title", href: fragment("doc", hit.id), text: hit.title || hit.external_id });
    const meta = element("div", { class: "meta" },
      hit.label ? element("span", { class: "label", text: hit.label }) : null, " ",
      element("span", { class: "distance", text: `distance ${hit.distance}` }), " · ",
      element("a", { class: "similar", href: fragment("similar", hit.id), text: "similar" }));
    $("hits").append(element("li", { class: "hit", "data-id": hit.id }, title,
      element("p", { class: "snippet", text: hit.snippet }), meta));
  }
  mark({ hits: hits.map((hit) => hit.id) });
}

function showMontage(hits, queryUrl) {
  if (queryUrl) {
    $("montage").append(element("figure", { class: "query" }, element("img", { src: queryUrl, alt: "query" }),
      element("figcaption", { text: "query" })));
  }
  for (const hit of hits) {
    const image = element("img", { src: `/api/images/${hit.id}.png?scale=3`, alt: hit.external_id, title: hit.external_id });
    $("montage").append(element("figure", { class: "hit", "data-id": hit.id },
      element("a", { href: fragment("similar", hit.id), class: "similar" }, image),
      element("figcaption", { text: `${hit.label ? hit.label + " · " : ""}${hit.distance}` })));
  }
  mark({ hits: hits.map((hit) => hit.id) });
}

async function searchText(q) {
  $("query").value = q;
  status("Searching…");
  const params = new URLSearchParams({ q, k: 20, mode: $("mode").value });
  if ($("rerank").checked) params.set("rerank", "true");
  const { hits } = await api(`/api/search?${params}`);
  showHits(hits, `${hits.length} documents nearest in meaning to your query`);
  if (state.map) {
    const { code } = await api(`/api/encode?${new URLSearchParams({ q, space: "euclidean" })}`);
    mark({ query: code });
  }
}

async function similar(id) {
  status("Searching…");
  const path = isImages() ? "/api/images/similar/" : "/api/similar/";
  const [{ hits }, item] = await Promise.all([api(`${path}${encodeURIComponent(id)}?k=20`),
    api(`/api/documents/${encodeURIComponent(id)}`)]);
  if (isImages()) {
    $("document").hidden = true;
    $("hits").replaceChildren();
    $("montage").replaceChildren();
    status(`${hits.length} images nearest to ${item.external_id}`);
    showMontage(hits, `/api/images/${item.id}.png?scale=3`);
  } else {
    showHits(hits, `${hits.length} documents nearest to “${item.title || item.external_id}”`);
  }
  mark({ item: item.id });
}

async function showDocument(id) {
  const doc = await api(`/api/documents/${encodeURIComponent(id)}`);
  $("hits").replaceChildren();
  $("montage").replaceChildren();
  status("");
  $("document").hidden = false;
  $("document-title").textContent = doc.title || doc.external_id;
  $("document-label").textContent = doc.labels.join(", ") || "no label";
  $("document-id").textContent = doc.external_id;
  $("document-similar").href = fragment("similar", doc.id);
  $("document-text").textContent = doc.text || "";
  mark({ item: doc.id, hits: [] });
}

async function searchImage(file) {
  status("Searching…");
  const { hits } = await api(`/api/images/search?k=20`, { method: "POST", body: file,
    headers: { "Content-Type": file.type || "application/octet-stream" } });
  $("hits").replaceChildren();
  $("montage").replaceChildren();
  status(`${hits.length} images nearest to ${file.name}`);
  showMontage(hits, URL.createObjectURL(file));
}

async function route() {
  const [key, ...rest] = location.hash.slice(1).split("=");
  const value = decodeURIComponent(rest.join("="));
  try {
    if (key === "q" && value) await searchText(value);
    else if (key === "similar" && value) await similar(value);
    else if (key === "doc" && value) await showDocument(value);
    else { clearResults(); status(""); }  // no fragment (the brand's link, or back to the start)
  } catch (error) {
    failed(error);
  }
}

// ------------------------------------------------------------------------- map
const map = {
  canvas: null, scale: 1, points: [], grid: new Map(), cell: 12,

  async load() {
    this.canvas = $("map");
    let data;
    try {
      data = await api("/api/map");
      if (!Array.isArray(data.x) || !Array.isArray(data.y) || !data.ids.length) throw new Error("no points");
    } catch (error) {  // no map model (404), or an answer the page cannot draw
      $("map-panel").hidden = true;
      return;
    }
    state.map = data;
    const xs = data.x, ys = data.y;
    // (a loop, not Math.min(...xs): spreading a collection's worth of arguments overflows the stack)
    const range = (values) => values.reduce(([low, high], v) => [Math.min(low, v), Math.max(high, v)], [Infinity, -Infinity]);
    const [[minX, maxX], [minY, maxY]] = [range(xs), range(ys)];
    this.bounds = { minX, minY, spanX: maxX - minX || 1, spanY: maxY - minY || 1 };
    this.index = new Map(data.ids.map((id, i) => [id, i]));
    $("map-note").textContent = `${data.ids.length} items at their 2-D codes` +
      (data.label_names.length ? `, coloured by label (${data.label_names.length})` : "") + ". Hover for titles; click to open.";
    $("legend").replaceChildren(...data.label_names.map((name, label) => element("li", { title: name },
      element("span", { class: "swatch", style: `background: ${PALETTE[label % PALETTE.length]}` }), name)));
    this.resize();
    new ResizeObserver(() => this.resize()).observe(this.canvas);
    this.canvas.addEventListener("mousemove", (event) => this.hover(event));
    this.canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    this.canvas.addEventListener("click", (event) => {
      const i = this.nearest(event);
      if (i >= 0) location.hash = fragment(isImages() ? "similar" : "doc", state.map.ids[i]);
    });
  },

  resize() {
    const ratio = window.devicePixelRatio || 1, side = this.canvas.clientWidth;
    this.canvas.width = this.canvas.height = Math.round(side * ratio);
    this.scale = ratio;
    this.project();
    this.draw();
  },

  // Canvas pixel of each point (CSS pixels), and a grid of them for hovering.
  project() {
    const side = this.canvas.clientWidth, pad = 12, { minX, minY, spanX, spanY } = this.bounds;
    const span = Math.max(spanX, spanY), inner = side - 2 * pad;
    this.toScreen = (x, y) => [pad + ((x - minX) / span) * inner + (span - spanX) / span * inner / 2,
      pad + (1 - (y - minY) / span) * inner - (span - spanY) / span * inner / 2];
    this.points = state.map.x.map((x, i) => this.toScreen(x, state.map.y[i]));
    this.grid = new Map();
    this.points.forEach(([px, py], i) => {
      const key = `${Math.floor(px / this.cell)},${Math.floor(py / this.cell)}`;
      if (!this.grid.has(key)) this.grid.set(key, []);
      this.grid.get(key).push(i);
    });
  },

  draw() {
    if (!state.map) return;
    const context = this.canvas.getContext("2d"), marks = state.marks;
    context.setTransform(this.scale, 0, 0, this.scale, 0, 0);
    context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const faded = marks.hits.size > 0 || marks.query !== null;
    const colour = (i) => state.map.labels[i] < 0 ? "#7f7f7f" : PALETTE[state.map.labels[i] % PALETTE.length];
    context.globalAlpha = faded ? 0.45 : 0.8;
    this.points.forEach(([px, py], i) => {
      context.fillStyle = colour(i);
      context.fillRect(px - 1.5, py - 1.5, 3, 3);
    });
    // The hits: dots of their label's colour, ringed in black
    context.globalAlpha = 1;
    context.strokeStyle = "#111";
    context.lineWidth = 1.25;
    for (const id of marks.hits) {
      const i = this.index.get(id);
      if (i === undefined) continue;
      context.fillStyle = colour(i);
      context.beginPath();
      context.arc(this.points[i][0], this.points[i][1], 4.5, 0, 2 * Math.PI);
      context.fill();
      context.stroke();
    }
    // The query (or the item shown): an orange star with a white halo, seen over any dots
    const star = (px, py, fill) => {
      context.beginPath();
      for (let k = 0; k < 10; k++) {
        const radius = k % 2 ? 5 : 12, angle = Math.PI / 5 * k - Math.PI / 2;
        context.lineTo(px + radius * Math.cos(angle), py + radius * Math.sin(angle));
      }
      context.closePath();
      context.lineJoin = "round";
      context.strokeStyle = "#fff";
      context.lineWidth = 4;
      context.stroke();
      context.fillStyle = fill;
      context.fill();
      context.strokeStyle = "#111";
      context.lineWidth = 1;
      context.stroke();
    };
    if (marks.query) star(...this.toScreen(marks.query[0], marks.query[1]), "#e8710a");
    if (marks.item !== null && this.index.has(marks.item)) star(...this.points[this.index.get(marks.item)], "#e8710a");
  },

  // The canvas's content box (inside its border), where the points are drawn, on the page.
  origin() {
    const box = this.canvas.getBoundingClientRect();
    return [box.left + this.canvas.clientLeft, box.top + this.canvas.clientTop];
  },

  nearest(event) {
    const [left, top] = this.origin(), x = event.clientX - left, y = event.clientY - top;
    let best = -1, bestDistance = 8 * 8;
    const cx = Math.floor(x / this.cell), cy = Math.floor(y / this.cell);
    for (let gx = cx - 1; gx <= cx + 1; gx++) {
      for (let gy = cy - 1; gy <= cy + 1; gy++) {
        for (const i of this.grid.get(`${gx},${gy}`) || []) {
          const d = (this.points[i][0] - x) ** 2 + (this.points[i][1] - y) ** 2;
          if (d < bestDistance) [best, bestDistance] = [i, d];
        }
      }
    }
    return best;
  },

  hover(event) {
    const i = this.nearest(event), tip = $("tooltip");
    if (i < 0) { tip.hidden = true; return; }
    const label = state.map.labels[i];
    tip.replaceChildren(element("strong", { text: state.map.titles[i] }),
      label >= 0 ? element("div", { text: state.map.label_names[label] }) : null);
    const x = this.points[i][0] + this.canvas.offsetLeft + this.canvas.clientLeft;
    const y = this.points[i][1] + this.canvas.offsetTop + this.canvas.clientTop;
    tip.hidden = false;  // shown before it is measured; beside the point, on its left near the right edge
    const right = x + 12 + tip.offsetWidth > $("map-panel").clientWidth;
    tip.style.left = `${right ? Math.max(0, x - 12 - tip.offsetWidth) : x + 12}px`;
    tip.style.top = `${y + 12}px`;
  },

  // Where item number i is drawn, in the page's CSS pixels (for tests and tools).
  pointOnPage(i) {
    const [left, top] = this.origin();
    return { x: left + this.points[i][0], y: top + this.points[i][1], id: state.map.ids[i] };
  },
};

function mark(changes) {
  if (changes.hits) state.marks.hits = new Set(changes.hits);
  if ("query" in changes) state.marks.query = changes.query;
  if ("item" in changes) state.marks.item = changes.item;
  if (!("query" in changes) && changes.item !== undefined) state.marks.query = null;
  map.draw();
}

// ------------------------------------------------------------------------- start
async function start() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    $("collection").textContent = "";
    status(error.message, true);
    return;
  }
  const info = state.info;
  $("collection").textContent = `${info.database} · ${info.documents} ${isImages() ? "images" : "documents"}` +
    (info.labels ? ` · ${info.labels} labels` : "");
  $(isImages() ? "image-form" : "text-form").hidden = false;
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("query").value.trim();
    if (!q) return;
    if (location.hash === fragment("q", q)) route();  // the same query again: no hashchange
    else location.hash = fragment("q", q);
  });
  $("image-file").addEventListener("change", () => {
    const file = $("image-file").files[0];
    if (file) searchImage(file).catch(failed);
  });
  window.addEventListener("hashchange", route);
  await map.load();
  await route();
}

window.semhashPage = { map, state };
start();
