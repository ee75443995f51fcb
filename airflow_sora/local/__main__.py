"""``python -m airflow_sora.local INPUT.mp4 OUTPUT.mp4``: clean one file, for people who want to try it.

Exit 0 on success (one line saying what was found); a non-zero exit and one clear line on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from airflow_sora.local.errors import LocalEngineError
from airflow_sora.local.settings import X264_PRESETS, EngineSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_sora.local",
                                     description="Remove the visible Sora mark from one video file, locally.")
    parser.add_argument("input", help="the watermarked video (.mp4)")
    parser.add_argument("output", help="where the clean video is written (.mp4)")
    parser.add_argument("--preset", default=EngineSettings.preset, choices=X264_PRESETS,
                        help="x264 speed preset (default %(default)s)")
    parser.add_argument("--crf", type=int, default=EngineSettings.crf, help="x264 quality, lower is better "
                        "(default %(default)s)")
    parser.add_argument("--report", metavar="FILE", help="also write what was found as JSON to FILE")
    args = parser.parse_args(argv)
    try:
        settings = EngineSettings(preset=args.preset, crf=args.crf)
        from airflow_sora.local import clean_file

        report = clean_file(args.input, args.output, settings)
    except (LocalEngineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.report:
        with open(args.report, "w") as handle:
            json.dump(report.summary(), handle, indent=2)
    if report.mark_found:
        print(f"{args.output}: mark removed from {report.marked_frames} of {report.frames} frames in "
              f"{len(report.segments)} segment(s), {report.seconds:.1f} s")
    else:
        print(f"{args.output}: no mark found; the file was copied unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
