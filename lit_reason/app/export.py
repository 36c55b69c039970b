"""``lit-reason export``: a checkpoint's trained policy as a Hugging Face model directory
(the work is :func:`lit_reason.models.export.export_checkpoint`).

    lit-reason export --ckpt runs/last.ckpt --out exported/ [--dtype bfloat16] [--merged]
"""

from __future__ import annotations

import argparse
import sys

from lit_reason.models.export import export_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-reason export",
                                     description="Export the trained policy of a checkpoint as a Hugging Face model directory.")
    parser.add_argument("--ckpt", required=True, help="a Lightning .ckpt written by lit-reason fit")
    parser.add_argument("--out", required=True, help="output directory (config, weights, tokenizer)")
    parser.add_argument("--dtype", default=None, help="cast the saved weights: float32 | bfloat16 | float16")
    parser.add_argument("--merged", action="store_true",
                        help="LoRA runs: also write the base with the adapter merged in, to OUT/merged")
    args = parser.parse_args(argv)
    try:
        print(export_checkpoint(args.ckpt, args.out, args.dtype, merged=args.merged))
    except (ValueError, FileNotFoundError) as err:
        message = " ".join(str(err).split())  # one line, as the CLI prints bad input (lit_reason/app/cli_errors.py)
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
