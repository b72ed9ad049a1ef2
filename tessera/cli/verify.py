"""`tessera verify`: read the watermark of a video and look up its generation."""

from __future__ import annotations

import argparse
import json

from tessera.cli.common import UsageError


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when a watermark is found, 1 when none is, 2 on bad input."""
    from tessera.export import read_video
    from tessera.safety import fingerprint, watermark

    try:
        frames, _ = read_video(args.video)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    payload, confidence = watermark.extract(frames)
    registry = fingerprint.FingerprintRegistry()
    result = {
        "video": str(args.video),
        "watermark": payload.hex() if payload else None,
        "confidence": round(confidence, 3),
    }
    record = registry.find_payload(payload) if payload else None
    if record is None:
        match = registry.nearest(frames)
        if match is not None:
            record, result["fingerprint_distance"] = match[0], round(match[1], 3)
    if record is not None:
        result["generation"] = {
            "generation_id": record.generation_id,
            "model_id": record.model_id,
            "prompt": record.prompt,
        }
    print(json.dumps(result))
    return 0 if payload is not None else 1


def add_parser(sub) -> None:
    v = sub.add_parser("verify", help="read the invisible watermark of a video and look up its generation")
    v.add_argument("video")
    v.set_defaults(func=cmd_verify)
