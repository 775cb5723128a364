"""The attention viewer's outputs: text tables, a PNG grid of heatmaps, a self-contained HTML view.

Why these three: a table answers "what does 'bank' look at" in a terminal; the PNG
grid (layers x heads of token x token heatmaps) goes into a paper or a README; the
HTML file is for exploring: like bertviz's head view, the tokens stand in two
columns and hovering a token draws its attention to every other token, one colour
per head, for the layer picked. The HTML is one file with its data, CSS and JS
inline (no network, opens from disk); the data is the `--json` object, embedded as
`<script type="application/json" id="attention-data">`.

matplotlib is imported only when a PNG is drawn (Agg backend, no display needed).
"""

from __future__ import annotations

import io
import json
import textwrap
from typing import Optional, Sequence

import numpy as np

from bert_jax import files
from bert_jax.errors import UserError
from bert_jax.inference import attention as attention_lib

_WIDTH = 12


def _cut(label: str, width: int = _WIDTH) -> str:
  return label if len(label) <= width else label[:width - 1] + "…"


def _names(tokens: Sequence[str]) -> list[str]:
  """Token labels for tables: a token that occurs more than once carries its index ("the@6")."""
  counts: dict[str, int] = {}
  for t in tokens:
    counts[t] = counts.get(t, 0) + 1
  return [_cut(t) if counts[t] == 1 else _cut(t, _WIDTH - 3) + f"@{i}"
          for i, t in enumerate(tokens)]


def word_table(att: attention_lib.Attention, word: attention_lib.WordAttention,
               top_k: int = 5) -> str:
  """Per layer (mean over heads) and overall: the tokens the word attends to most."""
  pieces = " ".join(att.tokens[i] for i in word.pieces)
  lines = [f"{word.word!r} = {pieces} (tokens {', '.join(map(str, word.pieces))}"
           + (f"; first of {word.occurrences} occurrences" if word.occurrences > 1 else "")
           + f"): the tokens it attends to most (mean over heads"
           + (f" and its {len(word.pieces)} pieces" if len(word.pieces) > 1 else "")
           + "; [CLS]/[SEP] and the word itself ranked apart)"]
  specials = np.flatnonzero(att.special)
  names = _names(att.tokens)
  header = f"{'layer':<8}" + "".join(f"{f'#{k + 1}':<{_WIDTH + 8}}" for k in range(top_k))
  lines.append(header + f"{'[CLS]/[SEP]':>12}{'itself':>8}")
  rows = [(str(i), r) for i, r in enumerate(word.per_layer_NxL)] + [("overall", word.overall_L)]
  for name, row_L in rows:
    best = word.ranked[np.argsort(-row_L[word.ranked], kind="stable")][:top_k]
    cells = "".join(f"{f'{names[j]} {row_L[j]:.3f}':<{_WIDTH + 8}}" for j in best)
    lines.append(f"{name:<8}{cells}{row_L[specials].sum():>12.3f}"
                 f"{row_L[word.pieces].sum():>8.3f}")
  return "\n".join(lines)


def top_table(tokens: Sequence[str], matrix_LxL: np.ndarray, title: str, top_k: int = 3) -> str:
  """For each query token, the keys it weights most."""
  names = _names(tokens)
  lines = [title, f"{'query':<{_WIDTH + 6}}" + "".join(
      f"{f'#{k + 1}':<{_WIDTH + 8}}" for k in range(top_k))]
  for i, row in enumerate(matrix_LxL):
    best = np.argsort(-row, kind="stable")[:top_k]
    cells = "".join(f"{f'{names[j]} {row[j]:.3f}':<{_WIDTH + 8}}" for j in best)
    lines.append(f"{f'{i:>3} {_cut(tokens[i])}':<{_WIDTH + 6}}{cells}")
  return "\n".join(lines)


def save_png(path: str, tokens: Sequence[str], grid_RxCxLxL: np.ndarray,
             row_names: Sequence[str], col_names: Sequence[str], title: str = "") -> None:
  """A grid of token x token heatmaps (rows x columns: usually layers x heads).

  Rows are queries, columns keys. Every panel carries its token labels while the
  grid is at most 4 x 4; larger grids label the left column and the bottom row.
  """
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("--output=*.png needs matplotlib: pip install matplotlib") from None
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  rows, cols, length = grid_RxCxLxL.shape[0], grid_RxCxLxL.shape[1], len(tokens)
  every = rows <= 4 and cols <= 4
  font = 9 if length <= 20 else 7 if length <= 40 else 5
  panel = min(max(3.0, 0.2 * length + 1.2), 9.0)
  fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 1.5, panel * rows + 1.0),
                           squeeze=False, dpi=100, layout="constrained")
  labels = [_cut(t, 14) for t in tokens]
  # One colour scale for every panel, so that panels compare; the top is the largest weight.
  top = float(max(grid_RxCxLxL.max(), 1e-6))
  image = None
  for r in range(rows):
    for c in range(cols):
      ax = axes[r, c]
      image = ax.imshow(grid_RxCxLxL[r, c], cmap="Blues", vmin=0.0, vmax=top,
                        interpolation="nearest")
      ax.set_title(f"{row_names[r]}, {col_names[c]}", fontsize=font + 2)
      ax.set_xticks(range(length))
      ax.set_yticks(range(length))
      ax.set_xticklabels(labels if every or r == rows - 1 else [], rotation=90, fontsize=font)
      ax.set_yticklabels(labels if every or c == 0 else [], fontsize=font)
      if every or c == 0:
        ax.set_ylabel("query", fontsize=font)
      if every or r == rows - 1:
        ax.set_xlabel("key", fontsize=font)
  if title:
    fig.suptitle("\n".join(textwrap.wrap(title, width=int(14 * (panel * cols + 1.5)))),
                 fontsize=11)
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention probability")
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  files.write_file_atomically(path, lambda f: f.write(buffer.getvalue()))


def embedded_json(document: dict) -> str:
  """JSON safe inside a <script> element: '<', '>' and '&' as \\u escapes (same value)."""
  text = json.dumps(document, ensure_ascii=False)
  return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def read_embedded_json(html: str) -> dict:
  """The data of an HTML view written by `save_html` (for tests and scripts)."""
  start_tag = '<script type="application/json" id="attention-data">'
  start = html.index(start_tag) + len(start_tag)
  return json.loads(html[start:html.index("</script>", start)])


def save_html(path: str, document: dict, title: str = "attention") -> None:
  """A self-contained head view of `document` (the `--json` object) in one HTML file."""
  html = (_HTML.replace("__TITLE__", _escape(title))
          .replace("__DATA__", embedded_json(document)))
  files.write_file_atomically(path, lambda f: f.write(html.encode("utf-8")))


def _escape(text: str) -> str:
  return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 20px;
       color: #222; }
h1 { font-size: 18px; margin: 0 0 8px 0; }
#controls { margin: 8px 0 12px 0; font-size: 14px; }
#controls label { margin-right: 10px; cursor: pointer; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
          vertical-align: middle; margin-right: 3px; }
#view { position: relative; }
svg text { font-size: 14px; cursor: default; }
svg text.active { font-weight: bold; }
#hint { font-size: 12px; color: #666; margin-top: 6px; }
</style></head>
<body>
<h1>__TITLE__</h1>
<div id="controls">Layer: <select id="layer"></select>
  <span id="heads"></span></div>
<div id="view"><svg id="svg" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div id="hint">Hover a token on the left to see where it attends (queries left, keys right);
hover one on the right to see who attends to it. Line opacity = attention probability; one
colour per head.</div>
<script type="application/json" id="attention-data">__DATA__</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("attention-data").textContent);
  var tokens = data.tokens, att = data.attention;
  var layerNames = data.layers.map(String);
  var headNames = data.heads === "mean" ? ["mean"] : data.heads;
  if (data.rollout) {  // one more "layer": the rollout, drawn in the first head's colour
    att = att.concat([[data.rollout]]); layerNames.push("rollout");
  }
  var colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
                "#7b4173", "#3182bd"];
  var rowH = 22, left = 10, colW = 160, gap = 300, top = 10;
  var svg = document.getElementById("svg"), NS = "http://www.w3.org/2000/svg";
  var layerSelect = document.getElementById("layer"), headBox = document.getElementById("heads");
  var shown = headNames.map(function () { return true; });
  var layer = 0, focus = null;
  layerNames.forEach(function (name, i) {
    var o = document.createElement("option"); o.value = i; o.textContent = name;
    layerSelect.appendChild(o);
  });
  layerSelect.onchange = function () { layer = +layerSelect.value; draw(); };
  headNames.forEach(function (name, h) {
    var l = document.createElement("label"), c = document.createElement("input");
    c.type = "checkbox"; c.checked = true;
    c.onchange = function () { shown[h] = c.checked; draw(); };
    var s = document.createElement("span"); s.className = "swatch";
    s.style.background = colors[h % colors.length];
    l.appendChild(c); l.appendChild(s);
    l.appendChild(document.createTextNode(name === "mean" ? "mean of heads" : "head " + name));
    headBox.appendChild(l);
  });
  svg.setAttribute("width", left + 2 * colW + gap);
  svg.setAttribute("height", top + rowH * tokens.length + 10);
  function el(name, attrs) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    return e;
  }
  var lines = el("g", {}), labels = [[], []];
  svg.appendChild(lines);
  [0, 1].forEach(function (side) {
    tokens.forEach(function (t, i) {
      var x = side === 0 ? left + colW - 8 : left + colW + gap + 8;
      var text = el("text", {x: x, y: top + rowH * i + rowH / 2 + 5,
                             "text-anchor": side === 0 ? "end" : "start"});
      text.textContent = t;
      text.onmouseenter = function () { focus = {side: side, i: i}; draw(); };
      text.onmouseleave = function () { focus = null; draw(); };
      svg.appendChild(text);
      labels[side].push(text);
    });
  });
  function draw() {
    while (lines.firstChild) { lines.removeChild(lines.firstChild); }
    var x0 = left + colW, x1 = left + colW + gap, heads = att[layer];
    var visible = shown.filter(Boolean).length || 1;
    heads.forEach(function (m, h) {
      if (!shown[h]) { return; }
      for (var q = 0; q < tokens.length; q++) {
        for (var k = 0; k < tokens.length; k++) {
          var other = focus && (focus.side === 0 ? focus.i !== q : focus.i !== k);
          if (other) { continue; }
          var w = m[q][k];
          if (w < 0.01) { continue; }
          lines.appendChild(el("line", {x1: x0, y1: top + rowH * q + rowH / 2, x2: x1,
                                        y2: top + rowH * k + rowH / 2,
                                        stroke: colors[h % colors.length], "stroke-width": 2,
                                        "stroke-opacity": focus ? w : w / visible}));
        }
      }
    });
    [0, 1].forEach(function (side) {
      labels[side].forEach(function (text, i) {
        var on = focus && focus.side === side && focus.i === i;
        text.setAttribute("class", on ? "active" : "");
      });
    });
  }
  // A link can open on a token and layer: file.html#query=2&layer=1 (key=J for the right side).
  location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    var kv = part.split("="), n = parseInt(kv[1], 10);
    if (isNaN(n)) { return; }
    if (kv[0] === "layer" && n >= 0 && n < layerNames.length) { layer = n; layerSelect.value = n; }
    if ((kv[0] === "query" || kv[0] === "key") && n >= 0 && n < tokens.length) {
      focus = {side: kv[0] === "query" ? 0 : 1, i: n};
    }
  });
  draw();
  window.attentionView = {data: data,
                          focus: function (side, i) { focus = {side: side, i: i}; draw(); }};
})();
</script>
</body></html>
"""


def grid_names(layer: Optional[int], head, num_layers: int, num_heads: int
               ) -> tuple[list[str], list[str]]:
  """Panel row/column names of `attention.select(att, layer, head)`."""
  rows = [f"layer {i}" for i in (range(num_layers) if layer is None else [layer])]
  cols = (["mean of heads"] if head == "mean" else
          [f"head {h}" for h in (range(num_heads) if head is None else [head])])
  return rows, cols
