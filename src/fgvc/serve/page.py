"""The page at ``GET /``: drop a photo, see the top-5 and the ``fgvc explain`` picture.

One self-contained HTML document (no external scripts, styles or fonts). It calls the same
``/predict`` and ``/explain`` endpoints as any client, and writes every server-provided string
with ``textContent``, so a class name cannot inject markup. ``body[data-state]`` says where the page
is (``ready``, ``predicting``, ``explaining``, ``done``, ``error``) for people and for the browser test.

:data:`CONTENT_SECURITY_POLICY` allows exactly what the page does: its one inline script (by hash, so an
injected one would not run) and style, ``fetch`` to this origin, the preview (a ``blob:`` URL) and the
explanation picture (a ``data:`` URL); nothing else loads, and no other site may frame it.
"""

from __future__ import annotations

import base64
import hashlib
import html

__all__ = ["CONTENT_SECURITY_POLICY", "page_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } .model { color: #666; margin-top: 0; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer; }
#drop.over { background: #eef5ff; border-color: #3a7bd5; }
#status { margin: 1rem 0; min-height: 1.4em; } .error { color: #b00020; }
.row { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; }
#preview { max-width: 280px; max-height: 280px; border-radius: 4px; }
table { border-collapse: collapse; } td, th { padding: .25rem .6rem; text-align: left; }
tbody tr:first-child { font-weight: bold; } td.p { text-align: right; font-variant-numeric: tabular-nums; }
#explanation { max-width: 100%; margin-top: 1rem; border: 1px solid #ddd; }
#explain-note { color: #555; }
"""

_SCRIPT = """
const $ = (id) => document.getElementById(id);
const health = fetch("/healthz").then((r) => r.json());
function state(s, text, error) {
  document.body.dataset.state = s;
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}
function form(file) { const f = new FormData(); f.append("file", file, file.name); return f; }
async function call(path, file) {
  const reply = await fetch(path, { method: "POST", body: form(file) });
  let data;
  try { data = await reply.json(); } catch (e) { data = { message: `${reply.status} ${reply.statusText}` }; }
  if (!reply.ok) throw new Error(data.message || `${reply.status}`);
  return data;
}
function showTop(p) {
  const body = $("top5").querySelector("tbody");
  body.replaceChildren();
  for (const c of p.top5) {
    const tr = document.createElement("tr");
    for (const [text, cls] of [[c.rank, ""], [c.class_id, "id"], [c.name, "name"],
                               [(100 * c.probability).toFixed(1) + "%", "p"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    body.append(tr);
  }
  $("top5").hidden = false;
  $("box").textContent = p.object_box ? `object box (x0, y0, x1, y1): ${p.object_box.join(", ")}` : "";
}
async function show(file) {
  if (!file) return;
  $("top5").hidden = true; $("explanation").hidden = true;
  $("explain-note").textContent = ""; $("box").textContent = "";
  $("preview").src = URL.createObjectURL(file); $("preview").hidden = false;
  state("predicting", `predicting ${file.name}…`);
  let p;
  try { p = (await call("/predict", file)).predictions[0]; }
  catch (e) { state("error", e.message, true); return; }
  showTop(p);
  const top = p.top5[0];
  const h = await health;
  if (!h.explain) {
    $("explain-note").textContent = h.explain_note;
    state("done", `${file.name}: ${top.class_id} ${top.name} (${(100 * top.probability).toFixed(1)}%)`);
    return;
  }
  state("explaining", `${file.name}: ${top.class_id} ${top.name}; drawing the explanation…`);
  try {
    const e = await call("/explain", file);
    $("explanation").src = e.picture; $("explanation").hidden = false;
    state("done", `${file.name}: ${top.class_id} ${top.name} (${(100 * top.probability).toFixed(1)}%)`);
  } catch (e) { $("explain-note").textContent = e.message; state("done", `${file.name}: ${top.class_id} ${top.name}`); }
}
const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over"); show(e.dataTransfer.files[0]);
});
$("file").addEventListener("change", (e) => show(e.target.files[0]));
state("ready", "");
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
                           "connect-src 'self'; img-src 'self' blob: data:; form-action 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'")


def page_html(model: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>fgvc — what is in this photo?</title><link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body data-state="loading">
<h1>fgvc — what is in this photo?</h1>
<p class="model">{html.escape(model)}</p>
<div id="drop" role="button" tabindex="0">Drop a photo here, or click to choose one
<input id="file" type="file" accept="image/*" hidden></div>
<p id="status"></p>
<div class="row">
<img id="preview" alt="the photo" hidden>
<div><table id="top5" hidden><thead><tr><th>#</th><th>class ID</th><th>name</th><th>probability</th></tr></thead>
<tbody></tbody></table><p id="box"></p></div>
</div>
<p id="explain-note"></p>
<img id="explanation" alt="what the model looked at (fgvc explain)" hidden>
<script>{_SCRIPT}</script>
</body></html>
"""
