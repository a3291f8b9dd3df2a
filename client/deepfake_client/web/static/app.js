// The upload page: one file at a time to POST /api/analyze; videos are followed through /api/jobs/<id>.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (value, digits = 4) => (value === null || value === undefined ? "n/a" : Number(value).toFixed(digits));
const POLL_MS = 400;

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

const server = { limitMb: 200, notice: "" };
let current = null; // the running video job: {status}

function reset() {
  showMessage("");
  for (const id of ["image-result", "video-result", "progress-box", "cancel"]) $(id).hidden = true;
}

// Any answer of any layer as {ok, status, data}: JSON from the app, or plain text (a proxy, waitress's
// own 413), turned into a sentence; never a JSON parse error.
async function readAnswer(response) {
  const text = await response.text();
  try {
    return { ok: response.ok, status: response.status, data: JSON.parse(text) };
  } catch (error) {
    const said = text.trim().split("\n")[0].slice(0, 200);
    const known = { 413: "the file is larger than the server accepts", 502: "the server behind the page failed",
                    503: "the server is busy or down", 504: "the server took too long" }[response.status];
    const message = `The server answered HTTP ${response.status}: ${known || said || response.statusText}.`;
    return { ok: false, status: response.status, data: { message } };
  }
}

function showNotice(notice) {
  for (const box of document.querySelectorAll(".result-notice, #model-notice")) {
    box.textContent = notice ? `Note: ${notice}.` : "";
    box.hidden = !notice;
  }
}

function showCard(card) {
  if (!card) return;
  const fields = $("model-card-fields");
  fields.replaceChildren();
  const heldOut = Object.entries(card.held_out || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") || "unknown";
  const rows = [
    ["Trained on", card.trained_on], ["Training images", card.training_images ?? "unknown"],
    ["Classes", (card.classes || []).join(", ") || "unknown"], ["Held-out", heldOut],
    ["Calibration", card.calibration], ["Precision check", card.precision_check],
    ["Intended use", card.intended_use], ["Known limits", card.limits],
  ];
  for (const [name, value] of rows) {
    const term = document.createElement("dt");
    term.textContent = name;
    const detail = document.createElement("dd");
    detail.textContent = value;
    detail.id = `card-${name.toLowerCase().replaceAll(" ", "-")}`;
    fields.append(term, detail);
  }
  $("model-card").hidden = false;
}

function offerDownload(section, name, data) {
  const button = section.querySelector("button.download");
  button.onclick = () => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
    link.download = `${name}.json`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  };
}

async function checkServer() {
  try {
    const { ok, data } = await readAnswer(await fetch("/api/health"));
    if (ok) {
      $("server-status").textContent = `Detector ready (model ${data.model}).`;
      $("server-status").className = "status ok";
      server.limitMb = data.upload_limit_mb;
      server.notice = data.notice || "";
      $("upload-limit").textContent = data.upload_limit_mb;
      if (data.image_formats) $("image-formats").textContent = data.image_formats.join(", ");
      if (data.video_formats) $("video-formats").textContent = data.video_formats.join(", ");
      showNotice(server.notice);
      showCard(data.card);
    } else {
      $("server-status").textContent = data.message;
      $("server-status").className = "status down";
    }
  } catch (error) {
    $("server-status").textContent = "The web app does not answer.";
    $("server-status").className = "status down";
  }
}

function named(name, message) {
  return message.startsWith(name) ? message : `${name}: ${message}`;
}

async function analyse(file) {
  reset();
  const megabytes = file.size / 1024 / 1024;
  if (megabytes > server.limitMb) {
    showMessage(`${file.name} is ${megabytes.toFixed(0)} MB, over the upload limit of ${server.limitMb} MB: it was not sent.`);
    return;
  }
  $("progress-box").hidden = false;
  $("progress-text").textContent = `Uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
  $("progress").removeAttribute("value");
  const form = new FormData();
  form.append("file", file);
  let answer;
  try {
    answer = await readAnswer(await fetch("/api/analyze?async=1", { method: "POST", body: form }));
  } catch (error) {
    $("progress-box").hidden = true;
    showMessage(`${file.name}: the upload failed (${error.message || error}).`);
    return;
  }
  const data = answer.data;
  if (!answer.ok) {
    $("progress-box").hidden = true;
    showMessage(named(file.name, data.message || `HTTP ${answer.status}`));
    return;
  }
  if (data.kind === "image") {
    $("progress-box").hidden = true;
    renderImage(data, file);
  } else {
    await follow(data);
  }
}

async function follow(job) {
  current = job;
  $("cancel").hidden = false;
  $("cancel").onclick = async () => {
    $("cancel").disabled = true;
    await fetch(job.status, { method: "DELETE" });
  };
  try {
    for (;;) {
      const { ok, status, data } = await readAnswer(await fetch(job.status));
      if (!ok) {
        $("progress-box").hidden = true;
        showMessage(named(job.name, data.message || `HTTP ${status}`));
        return;
      }
      const total = data.total || "?";
      $("progress-text").textContent = `Analysing ${data.name}: ${data.done} / ${total} frames`;
      if (data.total) $("progress").value = data.done / data.total;
      if (data.state === "done") {
        $("progress-box").hidden = true;
        renderVideo(data.result, data.thumbnails);
        return;
      }
      if (data.state === "cancelled") {
        $("progress-box").hidden = true;
        showMessage(`The analysis of ${data.name} was cancelled after ${data.done} frames.`, "info");
        return;
      }
      if (data.state === "error") {
        $("progress-box").hidden = true;
        showMessage(named(data.name, data.error.message));
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    current = null;
    $("cancel").hidden = true;
    $("cancel").disabled = false;
  }
}

function percent(p) {
  return `${Math.round(p * 100)}%`;
}

function renderImage(answer, file) {
  $("image-name").textContent = answer.name;
  const plain = answer.boxes || URL.createObjectURL(file);  // face-crop archives: the faces outlined
  $("image-preview").src = plain;
  showOverlayToggle(answer, plain);
  for (const row of document.querySelectorAll("#image-result tr.detail")) row.hidden = answer.no_face;
  $("image-faces-row").hidden = answer.no_face || !answer.faces;
  showNotice(answer.model_notice || server.notice);
  offerDownload($("image-result"), answer.name, answer);
  if (answer.no_face) {
    $("image-label").textContent = "No face";
    $("image-label").dataset.label = "none";
    $("image-explain").textContent = `No face was found in ${answer.name} (${answer.message}), so there is no verdict: this model classifies faces.`;
    $("image-result").hidden = false;
    return;
  }
  $("image-label").textContent = answer.label;
  $("image-label").dataset.label = answer.label;
  $("image-explain").textContent =
    `Fake probability ${fmt(answer.fake_probability, 2)}: the model's estimate that this image is manipulated ` +
    `(${percent(answer.fake_probability)}; 1 = certain it is fake, 0.5 = undecided, 0 = certain it is real), ` +
    "for images like the ones it was trained on.";
  $("image-fake").textContent = fmt(answer.fake_probability);
  $("image-softmax").textContent = Object.entries(answer.probabilities)
    .map(([label, p]) => `${label} ${fmt(p)}`)
    .join("   ");
  $("image-softmax-confidence").textContent = fmt(answer.softmax_confidence);
  $("image-adjusted").textContent = `${fmt(answer.adjusted_confidence)}  (sigmoid(|logit margin| / alpha))`;
  $("image-logits").textContent = `[${answer.logits.map((x) => fmt(x)).join(", ")}]`;
  $("image-calibration").textContent = `${fmt(answer.temperature)} / ${fmt(answer.alpha)}`;
  // face-crop archives: every face found, the verdict above being the most fake face's
  $("image-faces").textContent = (answer.faces || [])
    .map((f, i) => `face ${i + 1} at [${f.box.map((v) => Math.round(v)).join(", ")}]: ${f.prediction.label} ${fmt(f.prediction.fake_probability)}`)
    .join("; ");
  $("image-result").hidden = false;
}

function showOverlayToggle(answer, plain) {
  const toggle = $("image-overlay");
  toggle.checked = false;
  $("image-overlay-label").hidden = !answer.overlay;
  $("image-overlay-caption").hidden = true;
  toggle.onchange = () => {
    $("image-preview").src = toggle.checked ? answer.overlay : plain;
    $("image-overlay-caption").hidden = !toggle.checked;
    $("image-overlay-caption").textContent = toggle.checked
      ? `Heatmap of the fake score (${answer.explanation.method} on ${answer.explanation.layer}): red where the ` +
        "model's evidence for \"fake\" is strongest, clear where there is none."
      : "";
  };
}

function renderExplainedFrames(frames) {
  const box = $("explained-frames");
  box.replaceChildren();
  $("explained-box").hidden = !frames || frames.length === 0;
  for (const frame of frames || []) {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = frame.frame;
    image.alt = `frame at ${frame.time.toFixed(2)} s`;
    const label = document.createElement("label");
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.className = "frame-overlay";
    toggle.onchange = () => { image.src = toggle.checked ? frame.overlay : frame.frame; };
    label.append(toggle, ` ${frame.time.toFixed(2)} s, fake probability ${fmt(frame.fake_probability, 3)}`);
    figure.append(image, label);
    box.append(figure);
  }
}

function renderPeople(tracks) {
  // face-crop archives: one line per person, as the CLI prints it
  $("video-people-row").hidden = tracks.length === 0;
  const list = $("video-people");
  list.replaceChildren();
  for (const t of tracks) {
    const item = document.createElement("li");
    const seen = t.spans.map(([a, b]) => `${a.toFixed(1)}–${b.toFixed(1)} s`).join(", ");
    const manipulated = t.segments.length
      ? "manipulated " + t.segments.map((g) => `${g.start.toFixed(1)}–${g.end.toFixed(1)} s`).join(", ")
      : "no manipulated segment";
    item.textContent = `Person ${t.person}: in view ${seen} (${t.frames} frames), mean fake probability ` +
      `${fmt(t.mean_fake_probability, 2)}, peak ${fmt(t.peak_fake_probability, 2)}; ${manipulated}`;
    item.dataset.person = t.person;
    list.append(item);
  }
}

function renderVideo(result, thumbnails) {
  const s = result.summary;
  $("video-name").textContent = result.name;
  $("video-verdict").textContent = s.verdict;
  $("video-verdict").dataset.label = s.verdict;
  const t = result.thresholds;
  $("video-explain").textContent = s.analyzed
    ? `${s.reason}. A manipulated segment starts at a frame with a fake probability of ${t.segment_threshold} or ` +
      `more and lasts while frames stay at ${t.segment_low} or more, for at least ${t.min_segment_seconds} s; ` +
      `${s.fake_frames} of ${s.analyzed} analysed frames were called fake (${percent(s.fake_frame_ratio)}: the original ` +
      `app's ratio verdict, "${s.ratio_verdict}").`
    : "No frame could be analysed, so there is no verdict.";
  showNotice(result.model_notice || server.notice);
  offerDownload($("video-result"), result.name, result);
  const noFace = s.no_face_frames ? `, ${s.no_face_frames} without a face` : "";
  $("video-frames").textContent = `${s.frames} sampled at ${result.fps} fps, ${s.analyzed} analysed, ${s.failed} failed${noFace}`;
  $("video-ratio").textContent = `${fmt(s.fake_frame_ratio)} (${s.fake_frames}/${s.analyzed})`;
  $("video-mean").textContent = fmt(s.mean_fake_probability);
  $("video-adjusted").textContent = fmt(s.mean_adjusted_confidence);
  $("video-topk").textContent = `${fmt(s.top_k_mean)} (top ${s.top_k})`;
  $("video-confident").textContent = fmt(s.confident_score);
  $("video-segments").textContent = result.segments.length
    ? result.segments.map((g) => `${g.start.toFixed(1)}–${g.end.toFixed(1)} s (peak ${fmt(g.peak_probability, 3)})`).join(", ")
    : "none";
  renderPeople(result.tracks || []);
  renderExplainedFrames(result.explained_frames);
  drawTimeline(result);
  const body = document.querySelector("#frame-table tbody");
  body.replaceChildren();
  result.frames.forEach((frame, i) => {
    const row = body.insertRow();
    row.insertCell().textContent = frame.index;
    const image = document.createElement("img");
    if (thumbnails && thumbnails[i]) image.src = thumbnails[i];
    image.alt = `frame at ${frame.time.toFixed(2)} s`;
    row.insertCell().append(image);
    row.insertCell().textContent = `${frame.time.toFixed(2)} s`;
    row.insertCell().textContent = frame.no_face ? "no face" : frame.error ? "error" : fmt(frame.fake_probability);
    row.insertCell().textContent = frame.no_face ? "no face" : frame.error || frame.label;
    if (!frame.error && frame.fake_probability >= (result.thresholds.segment_threshold ?? 0.5)) row.className = "suspicious";
  });
  $("video-result").hidden = false;
}

function drawTimeline(result) {
  const svg = $("timeline");
  const width = 900, height = 220, left = 48, right = 12, top = 10, bottom = 34;
  const step = 1 / result.fps;
  const duration = Math.max(result.frames.length * step, step);
  const x = (t) => left + (t / duration) * (width - left - right);
  const y = (p) => top + (1 - p) * (height - top - bottom);
  const ns = "http://www.w3.org/2000/svg";
  const add = (name, attributes, text) => {
    const node = document.createElementNS(ns, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  for (const segment of result.segments) {
    add("rect", { class: "segment", x: x(segment.start), y: top, width: x(segment.end) - x(segment.start), height: height - top - bottom });
  }
  const threshold = result.thresholds.segment_threshold ?? 0.5;
  add("line", { class: "threshold", x1: left, x2: width - right, y1: y(threshold), y2: y(threshold) });
  for (const p of [0, 0.5, 1]) add("text", { x: left - 6, y: y(p) + 4, "text-anchor": "end" }, p.toFixed(1));
  const tick = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800].find((s) => duration / s <= 10) || 3600;
  for (let t = 0; t <= duration + 1e-9; t += tick) {
    add("text", { x: x(t), y: height - 12, "text-anchor": "middle" }, `${tick < 1 ? t.toFixed(1) : t.toFixed(0)} s`);
  }
  add("line", { class: "axis", x1: left, x2: left, y1: top, y2: height - bottom });
  add("line", { class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom });
  const points = result.frames.filter((f) => f.fake_probability !== null).map((f) => `${x(f.time + step / 2)},${y(f.fake_probability)}`);
  add("polyline", { class: "curve", points: points.join(" ") });
  for (const frame of result.frames) {
    if (frame.fake_probability === null) continue;
    add("circle", { class: "point", cx: x(frame.time + step / 2), cy: y(frame.fake_probability), r: 2.5 });
  }
}

$("file-input").addEventListener("change", (event) => {
  if (event.target.files.length) analyse(event.target.files[0]);
});
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("dragging");
});
zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("dragging");
  if (event.dataTransfer.files.length) analyse(event.dataTransfer.files[0]);
});
checkServer();
