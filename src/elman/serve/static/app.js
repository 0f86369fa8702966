// The page talks to the JSON API only: /v1/models, /v1/inspect and /v1/generate.
"use strict";

const $ = (id) => document.getElementById(id);
const VISIBLE = { " ": "\u2423", "\n": "\u23ce", "\t": "\u21e5" };
let models = [];
let limits = {};
let current = null;
let pending = 0; // the latest request wins: slower answers to older keystrokes are dropped

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
  return data;
}

function showError(error) { $("error").textContent = error ? String(error.message || error) : ""; }

function drawBars(labels, probabilities) {
  const order = probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  $("bars").replaceChildren(...order.map(([p, i]) => {
    const row = document.createElement("div");
    row.className = "bar-row";
    const name = document.createElement("span");
    name.textContent = labels[i];
    const track = document.createElement("div");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    track.appendChild(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(name, track, value);
    return row;
  }));
}

function drawCells(container, characters, tops) {
  container.replaceChildren(...characters.map((c, i) => {
    const cell = document.createElement("span");
    cell.className = "cell";
    const char = document.createElement("b");
    char.textContent = VISIBLE[c] || c;
    const best = tops[i][0];
    cell.append(char, `${VISIBLE[best.label] || best.label} ${(100 * best.probability).toFixed(0)}%`);
    return cell;
  }));
}

function drawHeatmap(characters, hidden, units) {
  const canvas = $("heatmap");
  const context = canvas.getContext("2d");
  const rows = units.length, columns = characters.length;
  const label = 18, cellW = Math.max(8, Math.min(40, (canvas.width - 4) / Math.max(columns, 1)));
  const cellH = (canvas.height - label) / Math.max(rows, 1);
  let extreme = 1e-9;
  for (const step of hidden) for (const u of units) extreme = Math.max(extreme, Math.abs(step[u]));
  context.clearRect(0, 0, canvas.width, canvas.height);
  characters.forEach((c, x) => {
    units.forEach((u, y) => {
      const v = hidden[x][u] / extreme; // -1 blue .. 0 white .. 1 red, as the scale under the canvas
      const r = v > 0 ? 255 : Math.round(255 * (1 + v)), b = v < 0 ? 255 : Math.round(255 * (1 - v));
      const g = Math.round(255 * (1 - Math.abs(v)));
      context.fillStyle = `rgb(${r},${g},${b})`;
      context.fillRect(x * cellW, y * cellH, cellW, cellH + 0.5);
    });
    context.fillStyle = "#1d2330";
    context.font = "13px monospace";
    context.fillText(VISIBLE[c] || c, x * cellW + cellW / 2 - 4, canvas.height - 4);
  });
  canvas.dataset.characters = String(columns);
  $("scale").hidden = columns === 0;
  $("scale-low").textContent = (-extreme).toFixed(2);
  $("scale-high").textContent = `+${extreme.toFixed(2)}`;
}

function showUnknown(characters) {
  $("unknown").hidden = characters.length === 0;
  $("unknown").textContent = `never seen in training, read as unknown: ${characters.join(" ")}`;
}

// Which characters make the text one class rather than the other (a classifier with a generative member).
function drawEvidence(evidence) {
  $("evidence-section").hidden = !evidence;
  if (!evidence) {
    $("evidence").replaceChildren();
    return;
  }
  const [first, second] = evidence.labels;
  const total = evidence.log_ratios.reduce((sum, r) => sum + r, 0);
  $("evidence-title").textContent =
    `Why ${first} rather than ${second}: ${total >= 0 ? "+" : ""}${total.toFixed(2)} nats in all`;
  const extreme = Math.max(1e-9, ...evidence.log_ratios.map(Math.abs));
  $("evidence").replaceChildren(...evidence.tokens.map((token, i) => {
    const ratio = evidence.log_ratios[i], v = ratio / extreme;
    const cell = document.createElement("span");
    cell.className = "cell";
    cell.style.background = v > 0 ? `rgba(214, 39, 40, ${(0.6 * v).toFixed(2)})`
      : `rgba(31, 119, 180, ${(-0.6 * v).toFixed(2)})`;
    const char = document.createElement("b");
    char.textContent = token === "<eos>" ? "end" : VISIBLE[token] || token;
    cell.append(char, `${ratio >= 0 ? "+" : ""}${ratio.toFixed(2)}`);
    return cell;
  }));
}

function clearInspection() {
  for (const id of ["bars", "prefixes", "next"]) $(id).replaceChildren();
  drawEvidence(null);
  showUnknown([]);
  drawHeatmap([], [], []);
}

// What the chosen model reads as you type: a classifier's text, or a language model's prime.
async function inspectTyped() {
  const ticket = ++pending;
  const classifier = current.task === "classify";
  const text = classifier ? $("text").value : $("prime").value;
  if (classifier ? !text.trim() : !text) {
    clearInspection();
    return;
  }
  const body = { model: current.name, text };
  if (current.conditions) body.condition = $("condition").value;
  try {
    const result = await api("/v1/inspect", body);
    if (ticket !== pending) return;
    showError(null);
    if (classifier) {
      drawBars(result.labels, result.probabilities[result.probabilities.length - 1]);
      drawCells($("prefixes"), result.characters, result.top);
      drawEvidence(result.evidence);
    } else {
      drawCells($("next"), result.characters, result.top);
    }
    showUnknown(result.unknown_characters);
    drawHeatmap(result.characters, result.hidden, result.most_active_units.slice(0, 48));
  } catch (error) {
    if (ticket !== pending) return;
    clearInspection(); // what is shown must be the current text's, or nothing
    showError(error);
  }
}

async function generate() {
  const model = current;
  const body = {
    model: model.name, prime: $("prime").value, length: Number($("length").value),
    temperature: Number($("temperature").value), num_samples: Number($("samples").value),
  };
  if (model.conditions) {
    body.condition = $("condition").value;
    body.guidance = Number($("guidance").value);
  }
  $("generate").disabled = true;
  try {
    const result = await api("/v1/generate", body);
    if (model !== current) return; // another model was chosen meanwhile
    $("generated").replaceChildren(...result.samples.map((sample) => {
      const text = document.createElement("pre");
      text.textContent = sample;
      return text;
    }));
    showError(null);
  } catch (error) { if (model === current) showError(error); } finally { $("generate").disabled = false; }
}

// A line model stops at the end of a line: its slider bounds a line's length, up to the longest it was
// trained on. A text model's slider is how much text to write.
function setLength(model) {
  const slider = $("length");
  const lines = model.kind === "lines";
  const most = Math.min(lines ? model.max_length : 1000, limits.max_generate_length);
  slider.min = lines ? "1" : "10";
  slider.step = lines ? "1" : "10";
  slider.max = String(most);
  slider.value = String(lines ? most : Math.min(300, most));
  $("length-name").textContent = lines ? "longest" : "length";
  $("length-value").textContent = slider.value;
}

let typing = null;
function inspectSoon() {
  clearTimeout(typing);
  typing = setTimeout(inspectTyped, 80);
}

function choose(name) {
  current = models.find((m) => m.name === name);
  clearTimeout(typing);
  pending++; // answers still on their way are for the previous model
  clearInspection();
  $("generated").replaceChildren();
  showError(null);
  const classifier = current.task === "classify";
  $("classify").hidden = !classifier;
  $("lm").hidden = classifier;
  const metrics = current.metrics || {};
  const figure = classifier && metrics.test ? `test accuracy ${(100 * metrics.test.accuracy).toFixed(1)}%`
    : metrics.val && metrics.val.loss !== undefined ? `validation ${metrics.val.loss.toFixed(3)} nats/char` : "";
  $("model-info").textContent = `${current.task}, ${current.vocabulary_size} symbols${figure ? ", " + figure : ""}`;
  $("condition-label").hidden = !current.conditions;
  $("guidance-label").hidden = !current.conditions;
  $("condition").replaceChildren(...(current.conditions || []).map((c) => new Option(c, c)));
  if (classifier) {
    if (!$("text").value) $("text").value = $("text").placeholder; // an example to look at before typing
  } else {
    setLength(current);
  }
  inspectTyped();
}

$("text").addEventListener("input", inspectSoon);
$("prime").addEventListener("input", inspectSoon);
$("condition").addEventListener("change", inspectSoon);
$("generate").addEventListener("click", generate);
for (const id of ["temperature", "length", "guidance"]) {
  $(id).addEventListener("input", () => { $(`${id}-value`).textContent = $(id).value; });
}
$("model").addEventListener("change", () => choose($("model").value));

api("/v1/models").then((data) => {
  models = data.models;
  limits = data.limits;
  $("text").maxLength = limits.max_chars;
  $("prime").maxLength = limits.max_chars;
  $("samples").max = String(limits.max_samples);
  $("model").replaceChildren(...models.map((m) => new Option(`${m.name} (${m.task})`, m.name)));
  choose(models[0].name);
}).catch(showError);
