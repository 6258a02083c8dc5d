"""Async (v2) image-to-image: submit, poll the status URL, download the result.

KINEMA_KEY=kin_... python examples/async_image.py [--out output.png]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time

import requests
from PIL import Image

BASE = os.environ.get("KINEMA_URL", "http://127.0.0.1:8000")
KEY = os.environ.get("KINEMA_KEY") or sys.exit("set KINEMA_KEY (from `kinema keys create`)")
HEADERS = {"x-api-key": KEY, "Content-Type": "application/json"}


def source_image() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (800, 800), (200, 90, 30)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()  # bare base64 is accepted too


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="output.png")
    args = parser.parse_args()

    submit = requests.post(
        f"{BASE}/v2/kling-3-image2image",
        headers=HEADERS,
        json={
            "image_url": source_image(),
            "prompt": "turn it into a watercolor painting",
            "aspect_ratio": "1:1",
            "output_format": "png",
        },
        timeout=60,
    )
    submit.raise_for_status()
    request = submit.json()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = requests.get(request["status_url"], headers=HEADERS, timeout=30)
        if status.status_code == 422 or status.json()["status"] == "COMPLETED":
            break
        time.sleep(0.5)
    result = requests.get(request["response_url"], headers=HEADERS, timeout=30)
    if result.status_code == 422:
        raise SystemExit(f"generation failed: {result.json()['error']}")
    body = result.json()
    media = requests.get(body["output"], timeout=60)  # a signed URL: no key needed
    media.raise_for_status()
    with open(args.out, "wb") as f:
        f.write(media.content)
    print(
        json.dumps({"file": args.out, "request_id": body["request_id"], "metrics": body["metrics"]})
    )


if __name__ == "__main__":
    main()
