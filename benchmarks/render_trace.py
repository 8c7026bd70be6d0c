"""Render a gpupipe --trace file to a PNG: one lane per thread, one box per input per stage.

    gpupipe run photos/ -o out/ --thumbnail 256 --trace trace.json
    python benchmarks/render_trace.py trace.json trace.png [--seconds 0.5]

Perfetto (ui.perfetto.dev) opens the JSON directly; this picture is for READMEs and notes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"read": (96, 165, 250), "decode": (251, 146, 60), "process": (74, 222, 128),
           "encode": (192, 132, 252), "write": (148, 163, 184)}
STAGE_ORDER = ["read", "decode", "process", "encode", "write"]


def render(trace: Path, out: Path, seconds: float | None, width: int = 1600) -> None:
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X"]
    start = min(e["ts"] for e in spans)
    end = max(e["ts"] + e["dur"] for e in spans)
    if seconds:
        end = min(end, start + seconds * 1e6)

    def lane_key(tid: int) -> tuple[int, str]:
        stage = names.get(tid, "").removeprefix("gpupipe-").rsplit("-", 1)[0]
        return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else 99, names.get(tid, ""))

    lanes = sorted({e["tid"] for e in spans}, key=lane_key)
    font = ImageFont.load_default(size=15)
    left, top, lane_h, gap = 170, 40, 26, 6
    height = top + len(lanes) * (lane_h + gap) + 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    scale = (width - left - 20) / max(end - start, 1)
    for row, tid in enumerate(lanes):
        y = top + row * (lane_h + gap)
        draw.text((10, y + 4), names.get(tid, str(tid)), fill="black", font=font)
        draw.rectangle([left, y, width - 20, y + lane_h], fill=(245, 245, 245))
        for e in spans:
            if e["tid"] != tid or e["ts"] > end:
                continue
            x0 = left + (e["ts"] - start) * scale
            x1 = max(x0 + 1, left + (min(e["ts"] + e["dur"], end) - start) * scale)
            draw.rectangle([x0, y + 2, x1, y + lane_h - 2], fill=COLOURS.get(e["name"], (200, 200, 200)),
                           outline=(60, 60, 60) if x1 - x0 > 4 else None)
    total_ms = (end - start) / 1000
    draw.text((left, 10), f"gpupipe trace: {len(spans)} spans over {total_ms:.0f} ms "
                          f"(one box per input per stage)", fill="black", font=font)
    y = height - 40
    x = left
    for stage in STAGE_ORDER:
        draw.rectangle([x, y, x + 18, y + 18], fill=COLOURS[stage])
        draw.text((x + 24, y + 1), stage, fill="black", font=font)
        x += 120
    draw.text((width - 180, y + 1), f"0 … {total_ms:.0f} ms", fill="black", font=font)
    image.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, help="show only the first SECONDS of the run")
    args = parser.parse_args()
    render(args.trace, args.out, args.seconds)


if __name__ == "__main__":
    main()
