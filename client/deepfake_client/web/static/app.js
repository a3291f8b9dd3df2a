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

function reset() {
  showMessage("");
  for (const id of ["image-result", "video-result", "progress-box"]) $(id).hidden = true;
}

async function checkServer() {
  try {
    const answer = await fetch("/api/health");
    const data = await answer.json();
    if (answer.ok) {
      $("server-status").textContent = `Detector ready (model ${data.model}).`;
      $("server-status").className = "status ok";
      $("upload-limit").textContent = data.upload_limit_mb;
    } else {
      $("server-status").textContent = data.message;
      $("server-status").className = "status down";
    }
  } catch (error) {
    $("server-status").textContent = "The web app does not answer.";
    $("server-status").className = "status down";
  }
}

async function analyse(file) {
  reset();
  $("progress-box").hidden = false;
  $("progress-text").textContent = `Uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
  $("progress").removeAttribute("value");
  const form = new FormData();
  form.append("file", file);
  let answer, data;
  try {
    answer = await fetch("/api/analyze?async=1", { method: "POST", body: form });
    data = await answer.json();
  } catch (error) {
    $("progress-box").hidden = true;
    showMessage(`The upload failed: ${error}`);
    return;
  }
  if (!answer.ok) {
    $("progress-box").hidden = true;
    showMessage(data.message || `HTTP ${answer.status}`);
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
  for (;;) {
    const answer = await fetch(job.status);
    const data = await answer.json();
    if (!answer.ok) {
      $("progress-box").hidden = true;
      showMessage(data.message || `HTTP ${answer.status}`);
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
    if (data.state === "error") {
      $("progress-box").hidden = true;
      showMessage(data.error.message);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function renderImage(answer, file) {
  $("image-name").textContent = answer.name;
  $("image-preview").src = URL.createObjectURL(file);
  $("image-label").textContent = answer.label;
  $("image-label").dataset.label = answer.label;
  $("image-fake").textContent = fmt(answer.fake_probability);
  $("image-softmax").textContent = Object.entries(answer.probabilities)
    .map(([label, p]) => `${label} ${fmt(p)}`)
    .join("   ");
  $("image-softmax-confidence").textContent = fmt(answer.softmax_confidence);
  $("image-adjusted").textContent = `${fmt(answer.adjusted_confidence)}  (sigmoid(|logit margin| / alpha))`;
  $("image-logits").textContent = `[${answer.logits.map((x) => fmt(x)).join(", ")}]`;
  $("image-calibration").textContent = `${fmt(answer.temperature)} / ${fmt(answer.alpha)}`;
  // face-crop archives: every face found, the verdict above being the most fake face's
  $("image-faces-row").hidden = !answer.faces;
  $("image-faces").textContent = (answer.faces || [])
    .map((f, i) => `face ${i + 1} at [${f.box.map((v) => Math.round(v)).join(", ")}]: ${f.prediction.label} ${fmt(f.prediction.fake_probability)}`)
    .join("; ");
  $("image-result").hidden = false;
}

function renderVideo(result, thumbnails) {
  const s = result.summary;
  $("video-name").textContent = result.name;
  $("video-verdict").textContent = s.verdict;
  $("video-verdict").dataset.label = s.verdict;
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
