"""One HTML page for a run folder: every picture, the metrics table and the config (``index.html``).

The page is a single file beside the pictures, which it shows by relative path: open it from the run
folder (``file://.../runs/demo/index.html``) or serve the folder; nothing is fetched from elsewhere.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

CAPTIONS = {
    "curves": "Training loss and held-out accuracy per epoch",
    "confusion": "Confusion matrix on the held-out split",
    "errors": "Held-out images the model gets wrong, with the predicted and the true class",
    "rollout": "Attention rollout (Abnar & Zuidema 2020): where the class decision looks",
    "pos_embed": "Position-embedding similarity (ViT Fig. 7, centre): each patch's table row against all others",
    "patch_filters": "Patch-embedding filters (ViT Fig. 7, left): the first principal components",
    "reconstructions": "Reconstructions",
    "samples": "Samples",
}


def write_run_page(run_dir: str | Path, summary: dict[str, Any], config: dict[str, Any],
                   epochs: list[dict[str, Any]], pictures: dict[str, Path]) -> Path:
    """Write ``run_dir/index.html``: the held-out top-1 (``summary``), the per-epoch metrics, every
    picture (``pictures``: name -> path inside ``run_dir``) and the run's config; returns its path."""
    run_dir = Path(run_dir)
    e = html.escape
    acc, count = summary.get("test_acc"), summary.get("test_count")
    head = (f'<p class="top1">held-out top-1 <b id="top1" data-value="{acc!r}">{acc:.2%}</b> on {count} images '
            f'({e(str(summary.get("weights", "model")))} weights, {e(str(summary.get("precision", "fp32")))})</p>'
            if acc is not None else "")
    keys = [k for k in ("epoch", "train_loss", "test_loss", "test_acc", "lr", "img_per_s", "epoch_time_s")
            if any(k in r for r in epochs)]
    rows = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in epochs)
    table = (f'<table id="metrics"><tr>{"".join(f"<th>{e(k)}</th>" for k in keys)}</tr>{rows}</table>'
             if epochs else "<p>no epoch finished yet</p>")
    figures = "".join(
        f'<figure><img src="{e(Path(p).name)}" alt="{e(name)}"><figcaption>{e(CAPTIONS.get(name, name))}'
        f'</figcaption></figure>' for name, p in pictures.items())
    title = f"{config.get('model', 'run')} on {config.get('data', '')}: {run_dir.name}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
.top1 {{ font-size: 1.3em; }} table {{ border-collapse: collapse; font-size: .9em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
figure {{ display: inline-block; margin: 1em; vertical-align: top; max-width: 520px; }}
img {{ max-width: 100%; image-rendering: pixelated; }} pre {{ background: #f6f6f6; padding: 1em; overflow: auto; }}
</style></head><body>
<h1>{e(title)}</h1>
{head}
<h2>Pictures</h2>
{figures}
<h2>Metrics per epoch</h2>
{table}
<h2>Config</h2>
<pre id="config">{e(json.dumps(config, indent=2, default=str))}</pre>
</body></html>
"""
    out = run_dir / "index.html"
    out.write_text(page)
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))
