// Kinema's playground: a form over the v2 API. The key lives in this browser's localStorage
// and goes to the server only as the x-api-key header of each call.
"use strict";

const VIDEO = "kling-3-standard-image2video";
const ASPECTS = {
  [VIDEO]: ["16:9", "9:16", "1:1"],
  "kling-3-image2image": ["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3"],
};
const KEY_STORE = "kinema.playground.key";
const HISTORY_STORE = "kinema.playground.history";
const HISTORY_MAX = 50;
// The API lives beside the page (also behind a root path): /playground -> /.
const BASE = new URL(".", window.location.href);

const $ = (id) => document.getElementById(id);
let droppedImage = null; // a File dropped on the drop zone (a file input cannot take it)

function model() {
  return document.querySelector("input[name=model]:checked").value;
}

function api(path) {
  return new URL(path, BASE).toString();
}

function headers() {
  return { "x-api-key": $("api-key").value.trim(), "content-type": "application/json" };
}

function readDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function imageValue(fileInput, urlInput, dropped) {
  const file = (fileInput && fileInput.files[0]) || dropped;
  if (file) return readDataUri(file);
  const url = urlInput.value.trim();
  return url || null;
}

function showFor(current) {
  const kind = current === VIDEO ? "video" : "image";
  for (const el of document.querySelectorAll("[data-for]")) el.hidden = el.dataset.for !== kind;
  const select = $("aspect-ratio");
  const keep = select.value;
  select.replaceChildren(...ASPECTS[current].map((a) => new Option(a, a)));
  if (ASPECTS[current].includes(keep)) select.value = keep;
}

function addRow(templateId, containerId, limit) {
  const container = $(containerId);
  if (container.children.length >= limit) return;
  const row = $(templateId).content.firstElementChild.cloneNode(true);
  row.querySelector(".remove").onclick = () => row.remove();
  container.append(row);
}

async function elementsValue() {
  const out = [];
  for (const row of $("elements").children) {
    const frontal = await imageValue(row.querySelector(".el-file"), row.querySelector(".el-url"));
    const refs = [];
    for (const f of row.querySelector(".el-ref-files").files) refs.push(await readDataUri(f));
    for (const u of row.querySelector(".el-ref-urls").value.split(",")) if (u.trim()) refs.push(u.trim());
    if (!frontal && refs.length === 0) continue;
    const element = { frontal_image_url: frontal };
    if (refs.length) element.reference_image_urls = refs;
    out.push(element);
  }
  return out;
}

function setIf(body, name, value) {
  if (value !== null && value !== undefined && value !== "") body[name] = value;
}

async function buildBody(current) {
  const body = {};
  const image = await imageValue($("image-file"), $("image-url"), droppedImage);
  setIf(body, current === VIDEO ? "start_image_url" : "image_url", image);
  setIf(body, "prompt", $("prompt").value.trim());
  body.aspect_ratio = $("aspect-ratio").value;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  const elements = await elementsValue();
  if (elements.length) body.elements = elements;
  if (current !== VIDEO) {
    body.resolution = $("resolution").value;
    body.output_format = $("output-format").value;
    return body;
  }
  body.duration = String($("duration").value);
  body.generate_audio = $("generate-audio").checked;
  setIf(body, "negative_prompt", $("negative-prompt").value.trim());
  if ($("cfg-scale").value !== "") body.cfg_scale = Number($("cfg-scale").value);
  setIf(body, "end_image_url", await imageValue($("end-file"), $("end-url")));
  const voices = $("voice-ids").value.split(",").map((v) => v.trim()).filter(Boolean);
  if (voices.length) body.voice_ids = voices;
  body.shot_type = $("shot-type").value;
  const shots = [...$("shots").children].map((row) => ({
    prompt: row.querySelector(".shot-prompt").value.trim(),
    duration: Number(row.querySelector(".shot-duration").value),
  }));
  if (shots.length) body.multi_prompt = shots;
  return body;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
}

// The API's own words: {"error": "..."} shown as sent; anything else as its raw text.
async function errorOf(response) {
  const text = await response.text();
  try {
    const data = JSON.parse(text);
    if (data && typeof data.error === "string") return `${response.status}: ${data.error}`;
  } catch (_) { /* not JSON: shown raw below */ }
  return `${response.status}: ${text}`;
}

function showStatus(s) {
  let text = s.status;
  if (s.queue_position !== undefined && s.queue_position !== null) text += ` · position ${s.queue_position}`;
  if (s.phase) text += ` · ${s.phase}`;
  if (typeof s.progress === "number") {
    text += ` · ${Math.round(s.progress * 100)}%`;
    $("progress").value = s.progress;
  }
  if (s.status === "COMPLETED") $("progress").value = 1;
  $("status").textContent = text;
  $("status").dataset.status = s.status;
}

function showResult(result, modelSlug) {
  const box = $("result");
  box.replaceChildren();
  if (!result.output) return;
  const media = document.createElement(modelSlug === VIDEO ? "video" : "img");
  media.src = result.output;
  if (modelSlug === VIDEO) {
    media.controls = true;
    media.autoplay = true;
    media.muted = true; // browsers only autoplay muted media
  } else {
    media.alt = `result of ${result.request_id}`;
  }
  const link = document.createElement("a");
  link.href = result.output;
  link.download = new URL(result.output, BASE).pathname.split("/").pop(); // keeps its extension
  link.textContent = "download";
  link.id = "download";
  const metrics = document.createElement("pre");
  metrics.textContent = JSON.stringify(result.metrics, null, 1);
  box.append(media, link, metrics);
}

function loadHistory() {
  try {
    return JSON.parse(localStorage.getItem(HISTORY_STORE) || "[]");
  } catch (_) {
    return [];
  }
}

function saveHistory(items) {
  localStorage.setItem(HISTORY_STORE, JSON.stringify(items.slice(0, HISTORY_MAX)));
  renderHistory();
}

function recordStatus(id, status) {
  const items = loadHistory();
  const item = items.find((i) => i.id === id);
  if (item && item.status !== status) {
    item.status = status;
    saveHistory(items);
  }
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren(...loadHistory().map((item) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${new Date(item.time).toLocaleString()} · ${item.model} · ${item.status}`;
    button.title = item.id;
    button.onclick = () => reload(item);
    li.append(button);
    return li;
  }));
}

async function reload(item) {
  $("error").hidden = true;
  $("result").replaceChildren();
  const response = await fetch(api(`v2/requests/${encodeURIComponent(item.id)}`), { headers: headers() });
  const data = await response.json().catch(() => ({}));
  if (data.status) {
    showStatus(data);
    recordStatus(item.id, data.status);
  }
  if (!response.ok) return showError(data.error ? `${response.status}: ${data.error}` : String(response.status));
  showResult(data, item.model);
}

// EventSource cannot send the key header: the stream is read with fetch().
async function follow(id, modelSlug) {
  const response = await fetch(api(`v2/requests/${encodeURIComponent(id)}/events`), { headers: headers() });
  if (!response.ok) return showError(await errorOf(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!event || !data) continue; // a keep-alive comment
      const body = JSON.parse(data);
      if (event[1] === "status") {
        showStatus(body);
        recordStatus(id, body.status);
        if (body.status === "FAILED") showError(body.error || "FAILED");
      } else if (event[1] === "result") {
        showResult(body, modelSlug);
      } else if (event[1] === "error") {
        showError(body.error || data);
      }
    }
  }
}

async function submit(event) {
  event.preventDefault();
  $("error").hidden = true;
  $("result").replaceChildren();
  $("progress").value = 0;
  const current = model();
  $("submit").disabled = true;
  try {
    const response = await fetch(api(`v2/${current}`), {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(await buildBody(current)),
    });
    if (!response.ok) {
      $("status").textContent = "refused";
      return showError(await errorOf(response));
    }
    const queued = await response.json();
    saveHistory([{ id: queued.request_id, model: current, time: Date.now(), status: queued.status }, ...loadHistory()]);
    showStatus(queued);
    await follow(queued.request_id, current);
  } catch (err) {
    showError(String(err));
  } finally {
    $("submit").disabled = false;
  }
}

function setUp() {
  $("api-key").value = localStorage.getItem(KEY_STORE) || "";
  $("api-key").oninput = () => localStorage.setItem(KEY_STORE, $("api-key").value.trim());
  for (const radio of document.querySelectorAll("input[name=model]")) radio.onchange = () => showFor(model());
  showFor(model());
  $("add-shot").onclick = () => addRow("shot-row", "shots", 5);
  $("add-element").onclick = () => addRow("element-row", "elements", 3);
  $("clear-history").onclick = () => saveHistory([]);
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    droppedImage = e.dataTransfer.files[0] || null;
    $("image-file").value = "";
    preview(droppedImage);
  };
  $("image-file").onchange = () => { droppedImage = null; preview($("image-file").files[0]); };
  $("form").onsubmit = submit;
  renderHistory();
}

function preview(file) {
  const img = $("preview");
  if (!file) { img.hidden = true; return; }
  img.src = URL.createObjectURL(file);
  img.hidden = false;
}

setUp();
