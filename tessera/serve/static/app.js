// Tessera page: talks to the same /v1 API as curl, with the key from the box (kept in localStorage).
"use strict";
const $ = (id) => document.getElementById(id);
const EXAMPLES = [
  "a red circle moving left on a black background",
  "a yellow triangle spinning on a navy background",
  "a blue square bouncing on a gray background",
  "a green circle growing on a black background",
  "the camera pans slowly right across a photo of a cat",
];
let currentJob = null;

function headers(extra) {
  return Object.assign({ Authorization: "Bearer " + $("key").value.trim() }, extra || {});
}
function showError(text) { $("error").textContent = text || ""; }
async function api(path, options) {
  const res = await fetch(path, Object.assign({ headers: headers() }, options || {}));
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail : JSON.stringify(detail);
    throw new Error(`${res.status}: ${text}${body && body.category ? " (" + body.category + ")" : ""}`);
  }
  return body;
}

// -- generate -------------------------------------------------------------------------------------
function setupGenerate() {
  for (const text of EXAMPLES) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text;
    b.onclick = () => { $("prompt").value = text; };
    $("examples").appendChild(b);
  }
  $("duration").oninput = () => { $("duration-out").textContent = $("duration").value + " s"; };
  $("gen-form").onsubmit = async (e) => {
    e.preventDefault(); showError("");
    const [width, height] = document.querySelector("input[name=shape]:checked").value.split("x").map(Number);
    const body = {
      prompt: $("prompt").value, width, height, duration_s: Number($("duration").value),
      steps: Number($("steps").value), seed: Number($("seed").value), guidance: Number($("guidance").value),
    };
    if ($("negative").value) body.negative_prompt = $("negative").value;
    try {
      const job = await api("/v1/videos", {
        method: "POST", body: JSON.stringify(body), headers: headers({ "Content-Type": "application/json" }),
      });
      follow(job);
    } catch (err) { showError(err.message); }
  };
  $("cancel").onclick = async () => {
    if (currentJob) { try { await api(`/v1/jobs/${currentJob}`, { method: "DELETE" }); } catch (err) { showError(err.message); } }
  };
}

function render(job) {
  $("job").hidden = false;
  const p = job.progress;
  $("progress").value = job.state === "done" ? 1 : p.fraction;
  let text = job.state;
  if (job.state === "queued" && job.queue_position !== null) text += ` (${job.queue_position} ahead)`;
  if (job.state === "running" && p.total) text += `: step ${p.step} of ${p.total}`;
  if (job.eta_s !== null) text += `, about ${Math.ceil(job.eta_s)} s left`;
  if (job.error) text += `: ${job.error}`;
  $("status").textContent = text;
  $("job").dataset.state = job.state;
}

// Server-sent events read through fetch, so the key goes in a header and never in a URL.
async function follow(job) {
  currentJob = job.id; render(job);
  const res = await fetch(`/v1/jobs/${job.id}/events`, { headers: headers() });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", last = job;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) { last = JSON.parse(data); if (last.id === currentJob) render(last); }
    }
  }
  if (last.state === "done" && last.id === currentJob) await play(last, $("player"));
  loadGallery();
}

async function videoURL(job) {
  const res = await fetch(job.video_url, { headers: headers() });
  if (!res.ok) throw new Error(`${res.status}: the video could not be loaded`);
  return URL.createObjectURL(await res.blob());
}
async function play(job, element) {
  try {
    element.src = await videoURL(job);
    element.hidden = false;
    await element.play().catch(() => {});
  } catch (err) { showError(err.message); }
}

async function loadGallery() {
  if (!$("key").value.trim()) return;
  try {
    const { jobs } = await api("/v1/jobs?limit=24");
    $("gallery").replaceChildren(...jobs.map((job) => {
      const card = document.createElement("div");
      card.className = "card"; card.dataset.job = job.id; card.dataset.state = job.state;
      card.textContent = `${job.state}: ${job.params.prompt || job.kind}`;
      if (job.video_url) card.onclick = () => { currentJob = job.id; render(job); play(job, $("player")); };
      return card;
    }));
  } catch (err) { showError(err.message); }
}

// -- edit (with a box drawn on the first frame for inpaint); the job shows below, as a generation does --
const box = { start: null, rect: null, scale: 1, image: null };
function setupEdit() {
  const canvas = $("box-canvas"), ctx = canvas.getContext("2d");
  const draw = () => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (box.image) ctx.drawImage(box.image, 0, 0, canvas.width, canvas.height);
    if (box.rect) { ctx.strokeStyle = "#ff0"; ctx.lineWidth = 2; ctx.strokeRect(...box.rect); }
  };
  $("edit-file").onchange = () => {
    const file = $("edit-file").files[0];
    if (!file) return;
    const url = URL.createObjectURL(file);
    const el = file.type.startsWith("image/") ? new Image() : document.createElement("video");
    const ready = () => {
      const w = el.naturalWidth || el.videoWidth, h = el.naturalHeight || el.videoHeight;
      box.scale = w / Math.min(w, 512); canvas.width = w / box.scale; canvas.height = h / box.scale;
      box.image = el; box.rect = null; draw();
    };
    if (el instanceof HTMLVideoElement) { el.muted = true; el.onloadeddata = ready; } else { el.onload = ready; }
    el.src = url;
  };
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.onmousedown = (e) => { box.start = at(e); };
  canvas.onmousemove = (e) => {
    if (!box.start) return;
    const [x, y] = at(e), [x0, y0] = box.start;
    box.rect = [Math.min(x0, x), Math.min(y0, y), Math.abs(x - x0), Math.abs(y - y0)]; draw();
  };
  canvas.onmouseup = () => {
    box.start = null;
    if (box.rect) $("box-out").textContent = boxPixels().join(",");
  };
  const showFields = () => {  // each task's own fields only
    for (const el of document.querySelectorAll("#edit-form [data-tasks]")) {
      el.hidden = !el.dataset.tasks.split(" ").includes($("edit-task").value);
    }
  };
  $("edit-task").onchange = showFields; showFields();
  $("edit-form").onsubmit = async (e) => {
    e.preventDefault(); showError("");
    const task = $("edit-task").value, form = new FormData();
    form.append("task", task);
    form.append("file", $("edit-file").files[0]);
    if (task === "interpolate" && $("edit-file-b").files[0]) form.append("file_b", $("edit-file-b").files[0]);
    form.append("prompt", $("edit-prompt").value);
    if (["extend", "interpolate", "image_to_video"].includes(task)) form.append("duration_s", $("edit-duration").value);
    if (task === "restyle") form.append("strength", $("edit-strength").value);
    if (task === "inpaint") {
      if (box.rect) form.append("box", boxPixels().join(","));
      form.append("start_s", $("edit-start").value || "0");
      if ($("edit-end").value) form.append("end_s", $("edit-end").value);
    }
    try {
      const job = await api("/v1/edits", { method: "POST", body: form });
      $("edit-result").textContent = `queued: ${job.params.resolved.width}x${job.params.resolved.height}, ${job.params.resolved.frames} frames`;
      follow(job);
    } catch (err) { $("edit-result").textContent = err.message; }
  };
}
function boxPixels() {
  const [x, y, w, h] = box.rect.map((v) => Math.round(v * box.scale));
  return [x, y, x + Math.max(w, 1), y + Math.max(h, 1)];
}

// -- verify ------------------------------------------------------------------------------------------
function setupVerify() {
  $("verify-form").onsubmit = async (e) => {
    e.preventDefault(); showError("");
    const form = new FormData();
    form.append("file", $("verify-file").files[0]);
    try { $("verify-result").textContent = JSON.stringify(await api("/v1/verify", { method: "POST", body: form }), null, 2); }
    catch (err) { $("verify-result").textContent = err.message; }
  };
}

function setupTabs() {
  for (const b of document.querySelectorAll(".tab")) {
    b.onclick = () => {
      for (const o of document.querySelectorAll(".tab")) o.classList.toggle("active", o === b);
      for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "tab-" + b.dataset.tab;
    };
  }
}

$("key").value = localStorage.getItem("tessera-key") || "";
$("key").onchange = () => { localStorage.setItem("tessera-key", $("key").value.trim()); loadGallery(); };
setupTabs(); setupGenerate(); setupEdit(); setupVerify(); loadGallery();
