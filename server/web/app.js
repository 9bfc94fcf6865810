// The live preview page: pick a pipeline, fill its inputs from its
// description, run it over POST /v1/pipelines/{name}:run and draw every
// step's preview as the server-sent events arrive. Plain JavaScript, no
// build step; the JSON is protobuf's mapping of loopserve.v1 with the
// proto's field names (docs/api.md, "HTTP").
"use strict";

const $ = (id) => document.getElementById(id);
let description = null;  // the chosen pipeline's PipelineDescription
let controller = null;   // aborts the run in flight

function headers(extra) {
  const h = Object.assign({}, extra);
  const token = $("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function getJson(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json();
  if (!response.ok) throw new Error(body.code + ": " + body.message);
  return body;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

// A Value's JSON ({"int64_value": "30"}, {"double_value": 3} ...) as text.
function valueText(value) {
  if (!value) return "";
  if ("int64_value" in value) return String(value.int64_value);
  if ("double_value" in value) return String(value.double_value);
  if ("string_value" in value) return value.string_value;
  if ("bool_value" in value) return value.bool_value ? "true" : "false";
  if ("tensor" in value) return "tensor " + value.tensor.datatype + " [" + (value.tensor.shape || []).join(",") + "]";
  return JSON.stringify(value);
}

function kinds(param) { return (param.type || "any").split(" | "); }

function buildForm() {
  const form = $("inputs");
  form.replaceChildren();
  const tensors = [];
  for (const param of description.inputs || []) {
    const label = document.createElement("label");
    label.title = param.description || "";
    label.append(param.name);
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = param.type + (param.required ? ", required" : "");
    label.append(type);
    let field;
    const k = kinds(param);
    if (param.choices && param.choices.length) {
      field = document.createElement("select");
      for (const choice of param.choices) field.add(new Option(choice, choice));
    } else if (k.length === 1 && k[0] === "bool") {
      field = document.createElement("input");
      field.type = "checkbox";
    } else if (k.includes("int") || k.includes("double")) {
      field = document.createElement("input");
      field.type = "number";
      field.step = k.includes("double") ? "any" : "1";
    } else if (k.includes("string") || k.includes("any")) {
      field = document.createElement("input");
      field.type = "text";
    } else {
      tensors.push(param.name);  // set through the API, not a form
      continue;
    }
    field.name = param.name;
    field.dataset.kinds = k.join(",");
    if (param.default_value) {
      if (field.type === "checkbox") field.checked = !!param.default_value.bool_value;
      else if (!("tensor" in param.default_value)) field.value = valueText(param.default_value);
    }
    if (param.name === "seed" && !param.default_value) field.placeholder = "random";
    label.append(document.createElement("br"), field);
    form.append(label);
  }
  if (tensors.length) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "Tensor inputs, set through the API: " + tensors.join(", ");
    form.append(note);
  }
  $("pipeline-description").textContent = description.description || "";
}

// The request's inputs: every field filled in, typed as its param takes it.
function collectInputs() {
  const inputs = {};
  for (const field of $("inputs").elements) {
    const k = field.dataset.kinds.split(",");
    if (field.type === "checkbox") { inputs[field.name] = { bool_value: field.checked }; continue; }
    const text = field.value.trim();
    if (text === "") continue;
    if (field.type === "number") {
      const number = Number(text);
      inputs[field.name] = k.includes("int") && Number.isInteger(number)
        ? { int64_value: text } : { double_value: number };
    } else {
      inputs[field.name] = { string_value: text };
    }
  }
  return inputs;
}

function decodeBase64(text) {
  const binary = atob(text || "");
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; ++i) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Draws an image tensor: UINT8 [..., H, W, C] (C 1 or 3), or FP32
// [..., C, H, W] scaled from its range. False when it is neither.
function drawTensor(tensor, canvas) {
  const shape = (tensor.shape || []).map(Number);
  const bytes = decodeBase64(tensor.raw_contents);
  let h, w, c, at;
  if (tensor.datatype === "UINT8" && shape.length >= 3 && [1, 3].includes(shape[shape.length - 1])) {
    [h, w, c] = shape.slice(-3);
    at = (y, x, ch) => bytes[(y * w + x) * c + Math.min(ch, c - 1)];
  } else if (tensor.datatype === "FP32" && shape.length >= 3 && [1, 3].includes(shape[shape.length - 3])) {
    [c, h, w] = shape.slice(-3);
    const floats = new Float32Array(bytes.buffer, 0, c * h * w);
    let lo = Infinity, hi = -Infinity;
    for (const v of floats) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const scale = hi > lo ? 255 / (hi - lo) : 0;
    at = (y, x, ch) => (floats[(Math.min(ch, c - 1) * h + y) * w + x] - lo) * scale;
  } else {
    return false;
  }
  const image = new ImageData(w, h);
  for (let y = 0; y < h; ++y) {
    for (let x = 0; x < w; ++x) {
      const o = (y * w + x) * 4;
      for (let ch = 0; ch < 3; ++ch) image.data[o + ch] = at(y, x, ch);
      image.data[o + 3] = 255;
    }
  }
  const scratch = document.createElement("canvas");
  scratch.width = w;
  scratch.height = h;
  scratch.getContext("2d").putImageData(image, 0, 0);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(scratch, 0, 0, canvas.width, canvas.height);
  return true;
}

// The server-sent events of a fetch response, as {event, data} objects.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

function showStats(stats, resolved) {
  const list = $("stats");
  list.replaceChildren();
  const add = (name, value) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  };
  add("iterations", stats.iterations || 0);
  add("run", (stats.run_ms || 0).toFixed(1) + " ms");
  add("queued", (stats.queue_ms || 0).toFixed(1) + " ms");
  add("steps/s", ((Number(stats.iterations || 0) * 1000) / Math.max(stats.run_ms || 0, 1e-9)).toFixed(1));
  if (stats.iterations_dropped) add("previews dropped", stats.iterations_dropped);
  if (stats.mean_batch_size) add("mean batch", Number(stats.mean_batch_size).toFixed(2));
  const parts = Object.entries(resolved || {}).map(([name, value]) => name + "=" + valueText(value));
  $("reproduce").textContent = parts.length ? "Reproduce with: " + parts.join(", ") : "";
}

async function run() {
  const name = $("pipeline").value;
  const stream = { every: Number($("every").value) || 1, backpressure: "LATEST" };
  // Previews are what this page shows: one small value rides along.
  if (description.preview) stream.preview = true;
  const iterationOutputs = description.iteration_outputs || [];
  if (iterationOutputs.length) stream.values = [iterationOutputs[0].name];
  const body = { inputs: collectInputs(), stream };
  controller = new AbortController();
  $("run").disabled = true;
  $("cancel").disabled = false;
  document.body.dataset.previews = "0";
  $("final").dataset.drawn = "false";
  $("progress").value = 0;
  $("stats").replaceChildren();
  $("reproduce").textContent = "";
  setStatus("running", "running " + name + "…");
  let started = performance.now(), firstIndex = null, resolved = {};
  try {
    const response = await fetch("/v1/pipelines/" + encodeURIComponent(name) + ":run", {
      method: "POST", body: JSON.stringify(body), signal: controller.signal,
      headers: headers({ "Content-Type": "application/json" }),
    });
    if (!response.ok) {
      const error = await response.json();
      throw new Error(error.code + ": " + error.message);
    }
    for await (const { event, data } of events(response)) {
      if (event === "started") {
        started = performance.now();
        resolved = data.resolved_inputs || {};
      } else if (event === "iterations") {
        for (const item of data.items || []) {
          const index = Number(item.index || 0), total = Number(item.total || 0);
          if (firstIndex === null) firstIndex = index;
          const done = index + 1;
          const rate = (done - firstIndex) / Math.max((performance.now() - started) / 1000, 1e-9);
          if (total) {
            $("progress").max = total;
            $("progress").value = done;
          }
          const eta = total && rate > 0 ? ((total - done) / rate).toFixed(1) + " s left" : "";
          $("progress-text").textContent =
            "step " + done + (total ? " / " + total : "") + " · " + rate.toFixed(1) + " steps/s" + (eta ? " · " + eta : "");
          if (item.preview_png) {
            $("preview").src = item.preview_png;
            document.body.dataset.previews = String(Number(document.body.dataset.previews) + 1);
          }
        }
      } else if (event === "result") {
        for (const value of Object.values(data.outputs || {})) {
          if (value.tensor && drawTensor(value.tensor, $("final"))) {
            $("final").dataset.drawn = "true";
            break;
          }
        }
        showStats(data.stats || {}, resolved);
      } else if (event === "end") {
        setStatus("done", "done");
      } else if (event === "error") {
        setStatus(data.code === "CANCELLED" ? "cancelled" : "error", data.code + ": " + data.message);
      }
    }
  } catch (error) {
    if (error.name === "AbortError") setStatus("cancelled", "cancelled");
    else setStatus("error", String(error.message || error));
  } finally {
    $("run").disabled = false;
    $("cancel").disabled = true;
    controller = null;
  }
}

async function choose(name) {
  description = await getJson("/v1/pipelines/" + encodeURIComponent(name));
  buildForm();
}

async function start() {
  try {
    const list = await getJson("/v1/pipelines");
    const select = $("pipeline");
    select.replaceChildren();
    for (const p of list.pipelines || []) select.add(new Option(p.name, p.name));
    const wanted = new URLSearchParams(location.search).get("pipeline");
    if (wanted) select.value = wanted;
    select.onchange = () => choose(select.value).catch((e) => setStatus("error", e.message));
    await choose(select.value);
    $("server-state").textContent = (list.pipelines || []).length + " pipelines";
    document.body.dataset.ready = "true";
  } catch (error) {
    $("server-state").textContent = String(error.message || error);
  }
}

$("run").onclick = () => run();
$("cancel").onclick = () => controller && controller.abort();
$("token").onchange = () => start();
start();
