"""The hosted API's Python snippet, pointed at Kinema: only API_URL and API_KEY change.

Run a server (`kinema serve --preset tiny`), then:
    KINEMA_KEY=kin_... python examples/hosted_snippet.py [--out output.mp4]

The start image here is sent inline as a data URI so the example needs no image host; an
``https://`` URL works the same way.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys

import requests
from PIL import Image, ImageDraw

API_URL = os.environ.get("KINEMA_URL", "http://127.0.0.1:8000") + "/v1/kling-3-standard-image2video"
API_KEY = os.environ.get("KINEMA_KEY") or sys.exit("set KINEMA_KEY (from `kinema keys create`)")


def start_image() -> str:
    img = Image.new("RGB", (1280, 720), (30, 60, 120))
    ImageDraw.Draw(img).ellipse((500, 220, 780, 500), fill=(240, 200, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="output.mp4")
    parser.add_argument("--duration", default="5")
    args = parser.parse_args()

    response = requests.post(
        API_URL,
        headers={"x-api-key": API_KEY, "Content-Type": "application/json"},
        json={
            "prompt": "The sun rises slowly over a calm sea, gentle waves",
            "start_image_url": start_image(),
            "duration": args.duration,
            "aspect_ratio": "16:9",
            "generate_audio": True,
        },
        timeout=900,
    )
    response.raise_for_status()
    with open(args.out, "wb") as f:
        f.write(response.content)
    print(
        json.dumps(
            {
                "file": args.out,
                "bytes": len(response.content),
                "request_id": response.headers["x-request-id"],
                "remaining_credits": response.headers["x-remaining-credits"],
                "metadata": json.loads(response.headers["x-output-metadata"]),
            }
        )
    )


if __name__ == "__main__":
    main()
