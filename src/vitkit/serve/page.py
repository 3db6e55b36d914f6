"""The page at ``/``: one self-contained HTML file (inline CSS and JavaScript, no build step, nothing
fetched from another site), so it works offline. It asks ``/v1/model`` what the model is, sends the
chosen or dropped image to ``/v1/classify?rollout=true`` (a CLIP: ``/v1/zero-shot`` with the labels
typed in), and draws the top-5 as bars and the attention rollout over the image."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vitkit serve</title>
<style>
  :root { --fg: #1d2433; --muted: #667085; --accent: #3b6fd8; --bg: #f6f7fb; --card: #fff; --line: #e3e6ee; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
         background: var(--bg); }
  header { padding: 14px 24px; background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 18px; }
  header p { margin: 2px 0 0; color: var(--muted); font-size: 13px; }
  main { display: flex; flex-wrap: wrap; gap: 20px; padding: 20px 24px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px; }
  #drop { width: 360px; min-height: 360px; display: flex; flex-direction: column; align-items: center;
          justify-content: center; border: 2px dashed #b8c2d6; border-radius: 10px; cursor: pointer;
          text-align: center; color: var(--muted); position: relative; }
  #drop.over { border-color: var(--accent); background: #eef3ff; }
  #stage { position: relative; display: none; }
  #stage canvas { display: block; max-width: 320px; max-height: 320px; image-rendering: auto; }
  #heat { position: absolute; left: 0; top: 0; pointer-events: none; }
  #results { width: 420px; }
  .row { display: grid; grid-template-columns: 130px 1fr 64px; align-items: center; gap: 8px; margin: 6px 0; }
  .row .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar { height: 14px; background: #e9edf5; border-radius: 7px; overflow: hidden; }
  .bar span { display: block; height: 100%; background: var(--accent); border-radius: 7px; }
  .row.first .name { font-weight: 600; }
  .pct { text-align: right; font-variant-numeric: tabular-nums; color: var(--muted); }
  #top1 { font-size: 26px; font-weight: 700; margin: 4px 0 10px; min-height: 36px; }
  #error { color: #b42318; min-height: 20px; }
  #status { color: var(--muted); font-size: 13px; min-height: 20px; }
  label.opt { display: block; margin-top: 10px; font-size: 13px; color: var(--muted); }
  input[type=text] { width: 100%; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; font: inherit; }
  .hidden { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>vitkit serve</h1>
  <p id="model">loading the model's description&hellip;</p>
</header>
<main>
  <section class="card">
    <label id="drop" for="file">
      <div id="hint">Drop an image here, or click to choose one<br><small>PNG, JPEG, BMP, GIF, WebP</small></div>
      <div id="stage"><canvas id="image"></canvas><canvas id="heat"></canvas></div>
    </label>
    <input id="file" type="file" accept="image/*" class="hidden">
    <label class="opt"><input id="show-rollout" type="checkbox" checked> attention rollout over the image</label>
    <div id="labels-box" class="hidden">
      <label class="opt" for="labels">labels (comma-separated), for CLIP zero-shot</label>
      <input id="labels" type="text" value="">
    </div>
  </section>
  <section class="card" id="results">
    <div id="status">choose an image</div>
    <div id="top1"></div>
    <div id="bars"></div>
    <div id="error" role="alert"></div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let info = null, lastImage = null, lastResult = null;

function fmtPct(p) { return (100 * p).toFixed(p >= 0.1 ? 1 : 2) + "%"; }

// a perceptual ramp (dark blue -> magenta -> orange -> yellow) for the rollout map, v in [0, 1]
const RAMP = [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]];
function ramp(v) {
  const x = Math.max(0, Math.min(1, v)) * (RAMP.length - 1), i = Math.min(Math.floor(x), RAMP.length - 2), t = x - i;
  return RAMP[i].map((c, k) => Math.round(c + t * (RAMP[i + 1][k] - c)));
}

async function loadInfo() {
  try {
    const r = await fetch("/v1/model");
    info = await r.json();
    const cls = info.classes ? `${info.classes.length} classes` : "no class names";
    $("model").textContent = `${info.name} \u00b7 ${info.kind} \u00b7 input ${info.input_size.join("\u00d7")} \u00b7 ` +
      `${info.precision} \u00b7 ${cls}` + (info.rollout ? " \u00b7 attention rollout" : "");
    if (info.kind === "clip") {
      $("labels-box").classList.remove("hidden");
      if (!$("labels").value) $("labels").value = "a cat, a dog, a digit";
    }
    if (!info.rollout) $("show-rollout").parentElement.classList.add("hidden");
  } catch (e) {
    $("model").textContent = "the server did not describe its model";
  }
}

function drawImage(img) {
  const canvas = $("image"), heat = $("heat"), max = 320;
  const s = Math.min(max / img.naturalWidth, max / img.naturalHeight);
  const w = Math.max(1, Math.round(img.naturalWidth * s)), h = Math.max(1, Math.round(img.naturalHeight * s));
  for (const c of [canvas, heat]) { c.width = w; c.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = s < 1 || img.naturalWidth >= 64;  // tiny images (8x8 digits) stay crisp
  ctx.drawImage(img, 0, 0, w, h);
  heat.getContext("2d").clearRect(0, 0, w, h);
  $("hint").classList.add("hidden");
  $("stage").style.display = "block";
}

function drawRollout(rollout) {
  const heat = $("heat"), ctx = heat.getContext("2d");
  ctx.clearRect(0, 0, heat.width, heat.height);
  if (!rollout || !$("show-rollout").checked) return;
  const [gh, gw] = rollout.grid, small = document.createElement("canvas");
  small.width = gw; small.height = gh;
  const sctx = small.getContext("2d"), data = sctx.createImageData(gw, gh);
  const flat = rollout.map.flat(), lo = Math.min(...flat), span = Math.max(...flat) - lo || 1;
  rollout.map.forEach((row, y) => row.forEach((v, x) => {
    const u = (v - lo) / span, [r, g, b] = ramp(u), o = 4 * (y * gw + x);  // stretched to the map's range
    data.data[o] = r; data.data[o + 1] = g; data.data[o + 2] = b; data.data[o + 3] = Math.round(40 + 110 * u);
  }));
  sctx.putImageData(data, 0, 0);
  // the map covers what the model saw: the whole image, or its centre crop (crop_pct)
  let [x0, y0, w, h] = [0, 0, heat.width, heat.height];
  if (info && info.crop_pct && info.crop_mode === "squash") {
    [x0, y0, w, h] = [w * (1 - info.crop_pct) / 2, h * (1 - info.crop_pct) / 2, w * info.crop_pct, h * info.crop_pct];
  } else if (info && info.crop_pct) {
    const side = Math.min(w, h) * info.crop_pct;
    [x0, y0, w, h] = [(w - side) / 2, (h - side) / 2, side, side];
  }
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, x0, y0, w, h);
}

function showResults(res) {
  lastResult = res;
  const bars = $("bars");
  bars.textContent = "";
  res.topk.forEach((t, i) => {
    const row = document.createElement("div");
    row.className = "row" + (i === 0 ? " first" : "");
    row.innerHTML = '<span class="name"></span><div class="bar"><span></span></div><span class="pct"></span>';
    row.querySelector(".name").textContent = t.label;
    row.querySelector(".name").title = t.label;
    row.querySelector(".bar span").style.width = (100 * t.prob).toFixed(2) + "%";
    row.querySelector(".pct").textContent = fmtPct(t.prob);
    bars.appendChild(row);
  });
  const top = res.topk[0];
  $("top1").textContent = top ? top.label : "";
  $("top1").dataset.label = top ? top.label : "";
  drawRollout(res.rollout);
}

async function classify(file) {
  lastResult = null;
  $("error").textContent = "";
  $("top1").textContent = ""; $("top1").dataset.label = ""; $("bars").textContent = "";
  $("status").textContent = `classifying ${file.name || "the image"}\u2026`;
  const url = URL.createObjectURL(file), img = new Image();
  img.onload = () => { lastImage = img; drawImage(img); };
  img.src = url;
  const body = new FormData();
  body.append("file", file, file.name || "image");
  let path = "/v1/classify?topk=5&rollout=true";
  if (info && info.kind === "clip") {
    body.append("labels", $("labels").value);
    path = "/v1/zero-shot?topk=5&rollout=true";
  }
  const t0 = performance.now();
  try {
    const r = await fetch(path, { method: "POST", body });
    const res = await r.json();
    if (!r.ok) throw new Error(res.error || `HTTP ${r.status}`);
    let tries = 0;  // draw once the image is on the canvas (or give up waiting for it after 2 s)
    const wait = () => (lastImage === img || ++tries > 100) ? showResults(res) : setTimeout(wait, 20);
    wait();
    $("status").textContent = `${file.name || "image"}: answered in ${(performance.now() - t0).toFixed(0)} ms`;
    $("status").dataset.done = "1";
  } catch (e) {
    $("status").textContent = "";
    $("error").textContent = e.message;
  }
}

$("file").addEventListener("change", (e) => { if (e.target.files.length) classify(e.target.files[0]); });
const drop = $("drop");
["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
  e.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => {
  e.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]); });
$("show-rollout").addEventListener("change", () => { if (lastResult) drawRollout(lastResult.rollout); });
loadInfo();
</script>
</body>
</html>
"""
