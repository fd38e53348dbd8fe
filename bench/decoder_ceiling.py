"""What today's decoder makes of a latent with no quantization at all: a ceiling for issue 35's
"+2 dB at QF 4 and QF 16" (docs/research/decoder.md).

    PYTHONPATH=. .venv/bin/python bench/decoder_ceiling.py --data ../shared/data/imagenette/val

On a seeded val subset (``models.data.eval_arrays``, ``--limit`` images, 224² centre crops) the
bundle's decoder.onnx reads the encoder's base latent unquantized, and quantized at each
``--qfs``; PSNR as ``spic-card`` (uint8 pictures). The JSON summary is the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from models.data import eval_arrays
from shared.bundles import DEFAULT_BUNDLE
from shared.preprocess import to_uint8_image
from shared.quantize import dequantize, quantize
from shared.runtime import SpicCodec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="val folder (<class>/*.JPEG)")
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--qfs", type=int, nargs="+", default=[4, 16])
    args = ap.parse_args()
    codec = SpicCodec(args.bundle)
    images = eval_arrays(args.data, codec.manifest.preprocessing.size, args.limit)[0]
    psnr: dict[str, list[float]] = {"unquantized": [], **{f"QF{q}": [] for q in args.qfs}}
    for image in images:
        x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        y = codec.analyse(x, enhancement=False)
        latents = {"unquantized": y, **{f"QF{q}": dequantize(quantize(y, q), q) for q in args.qfs}}
        for name, latent in latents.items():
            # the bundle's own decoder.onnx, as the dashboard renders a frame of these QFs
            out = codec.session("decoder").run(None, {"latent": latent[None]})[0]
            picture = to_uint8_image(out[0])
            psnr[name].append(float(peak_signal_noise_ratio(image, picture, data_range=255)))
    summary = {
        "benchmark": "decoder_ceiling",
        "command": "PYTHONPATH=. python bench/decoder_ceiling.py " + " ".join(sys.argv[1:]),
        "model_id": codec.model_id,
        "images": len(images),
        "psnr_db": {k: round(float(np.mean(v)), 2) for k, v in psnr.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
