"""The codec runtime: one object opens a codec once and offers every step both sides take.

    encode half (the edge)   image -> encoder graph -> quantize -> entropy code -> frame bytes
    decode half (the cloud)  frame bytes -> parse and bound -> entropy decode -> dequantize -> ŷ
    then                     ŷ -> classify(head)        (no pixel decoded), or
                             ŷ -> reconstruct(decoder)  (only when a picture is asked for)

``SpicCodec`` owns the manifest, the codebook and every ONNX session, each opened the first time
it is needed: a camera never opens a classifier, a cloud never opens an encoder. Heads
(``shared.heads``) are registered on the codec they read: the bundle's own classifier, and any
number added later, none of which changes the codec id a frame carries; so are decoders
(``shared.decoders``, ``add_decoder``), which ``reconstruct`` prefers for the QFs they serve.
The edge (``edge_client.encoder``), the cloud (``cloud_service.services``), the evaluation and
the benchmarks all go through this object.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from shared import bitstream
from shared.codebook import Codebook
from shared.decoders import Decoder
from shared.heads import Head, HeadAnswers
from shared.manifest import Manifest, ServingLimits, load_manifest
from shared.onnx_session import make_session
from shared.preprocess import to_uint8_image

# Heads per codec the cloud runs on every frame: each costs a classifier pass per frame.
MAX_HEADS = 16


def serving_limits(bundle: ServingLimits | None, cap: ServingLimits | None) -> ServingLimits:
    """The tighter of a bundle's own limits and the service's: a manifest may only lower them."""
    if bundle is None or cap is None:
        return bundle or cap or ServingLimits()
    return ServingLimits(
        max_input_pixels=min(bundle.max_input_pixels, cap.max_input_pixels),
        max_input_side=min(bundle.max_input_side, cap.max_input_side),
    )


class SpicCodec:
    def __init__(
        self,
        bundle_path: str | Path,
        threads: int = 1,
        cache_dir: str | Path | Literal[False] | None = False,
        limits: ServingLimits | None = None,
        arena: bool = True,
    ):
        self.path = Path(bundle_path)
        self.manifest: Manifest = load_manifest(self.path)
        self.codebook = Codebook(self.manifest)
        self.limits = serving_limits(self.manifest.limits, limits)
        self.threads, self.cache_dir, self.arena = threads, cache_dir, arena
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self.heads: dict[str, Head] = {}
        # Decoders added on the cloud side (shared.decoders), the latest registered first.
        self.decoders: list[Decoder] = []
        self.default_head = self.manifest.head.name if self.manifest.head else "bundle"

    # -- what the codec is ----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """The codec id: what every frame of this codec carries (``Manifest`` explains it)."""
        return self.manifest.model_id

    @property
    def ids(self) -> list[str]:
        return self.manifest.ids

    @property
    def native_shape(self) -> tuple[int, int, int]:
        return self.codebook.native_shape

    @property
    def labels(self) -> list[str]:
        return self.head().labels

    def session(self, role: str) -> ort.InferenceSession:
        """The graph of a ``files`` role, opened once."""
        with self._lock:
            if role not in self._sessions:
                if role not in self.manifest.files:
                    raise KeyError(f"bundle {self.path} has no {role} graph")
                self._sessions[role] = make_session(
                    self.path / self.manifest.files[role].path,
                    threads=self.threads,
                    cache_dir=self.cache_dir,
                    arena=self.arena,
                )
            return self._sessions[role]

    # -- encode half ----------------------------------------------------------------------------

    def analyse(self, x: np.ndarray, int8: bool = False, enhancement: bool = True) -> np.ndarray:
        """The encoder on one prepared (3, H, W) image: the latent y (C, h, w), an enhancement
        layer's channels after the base latent's unless ``enhancement`` is false."""
        y: np.ndarray = self.session("encoder_int8" if int8 else "encoder").run(
            None, {"image": x[None]}
        )[0][0]
        layer = self.manifest.enhancement
        if enhancement and layer is not None:
            extra = self.session(layer.encoder).run(None, {"image": x[None]})[0][0]
            y = np.concatenate([y, extra])
        return y

    def compress(
        self, y: np.ndarray, qf: int, codec: str, image_size: tuple[int, int]
    ) -> tuple[np.ndarray, bytes]:
        """An encoder output y (C, h, w) of an image of ``image_size`` (w, h) -> (symbols, frame)."""
        symbols = self.manifest.quantize_latent(y, qf)  # an enhancement layer only from its QF
        return symbols, self.codebook.encode(symbols, qf, codec, image_size)

    # -- decode half ----------------------------------------------------------------------------

    def parse(self, data: bytes) -> bitstream.Frame:
        """Header, CRC and geometry against this codec and its serving limits; BitstreamError."""
        frame = bitstream.unpack(data)
        if frame.frame_type == "key":  # a delta's or skip's geometry is its reference's
            self.codebook.check_geometry(frame, self.limits)
        return frame

    def decompress(self, frame: bitstream.Frame) -> np.ndarray:
        """A parsed frame's latent ŷ (C, h, w) float32: entropy decode, then dequantize."""
        symbols = self.codebook.decode_frame(frame, self.limits, accept=self.ids)
        return self.manifest.dequantize_latent(symbols, frame.qf)

    def latents(self, symbols: list[np.ndarray], qfs: list[int]) -> np.ndarray:
        """Dequantize several frames' symbols into one (N, C, h, w) batch."""
        m = self.manifest
        return np.stack([m.dequantize_latent(s, q) for s, q in zip(symbols, qfs, strict=True)])

    # -- heads ----------------------------------------------------------------------------------

    def load_heads(self, folders: Sequence[Path] = ()) -> None:
        """Open the bundle's own classifier and the heads in ``folders`` that read this codec."""
        if not self.heads:
            self.heads[self.default_head] = Head.embedded(
                self.path, self.manifest, self.threads, self.arena
            )
        for folder in folders:
            self.add_head(Head.open(folder, self.threads, self.arena))

    def add_head(self, head: Head) -> Head | None:
        """Register ``head`` (replacing one of its name); the head it replaced, if any."""
        if head.codec_id not in self.ids:
            raise ValueError(
                f"head {head.name} reads codec {head.codec_id}; this is {self.model_id}"
            )
        if head.name not in self.heads and len(self.heads) >= MAX_HEADS:
            raise ValueError(f"codec {self.model_id} already has {MAX_HEADS} heads")
        old = self.heads.get(head.name)
        self.heads = {**self.heads, head.name: head}  # a new dict: readers see one or the other
        return old

    def head(self, name: str | None = None) -> Head:
        if not self.heads:
            self.load_heads()
        return self.heads[name or self.default_head]

    def classify(self, y_hat: np.ndarray, heads: list[str] | None = None) -> dict[str, HeadAnswers]:
        """(N, C, h, w) latents -> each head's answers (every head unless ``heads`` names some),
        from the base channels only."""
        base = y_hat[:, : self.manifest.latent.channels].astype(np.float32)
        if not self.heads:
            self.load_heads()
        chosen = self.heads if heads is None else {n: self.heads[n] for n in heads}
        return {name: head.run(base) for name, head in chosen.items()}

    def classify_latents(self, y_hat: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents -> (N, classes) probabilities of the default head."""
        probs: np.ndarray = self.classify(y_hat, [self.default_head])[self.default_head].probs
        return probs

    # -- pictures -------------------------------------------------------------------------------

    def add_decoder(self, decoder: Decoder) -> None:
        """Register a base-latent decoder: ``reconstruct`` prefers it for the QFs it serves.
        The codec id is untouched (a decoder is no part of it); one of another codec is refused."""
        if decoder.codec_id not in self.ids:
            raise ValueError(
                f"decoder {decoder.name} reads codec {decoder.codec_id}; this is {self.model_id}"
            )
        others = [d for d in self.decoders if d.name != decoder.name]
        self.decoders = [decoder, *others]  # a new list: readers see one or the other

    def decoder_for(self, qf: int) -> Decoder | None:
        """The registered decoder that renders frames made at ``qf``, None for the bundle's."""
        if self.manifest.decoder_role(qf) != "decoder":
            return None  # an enhancement layer's frames keep the layer's own decoder
        return next((d for d in self.decoders if d.serves(qf)), None)

    def reconstruct(self, y_hat: np.ndarray, qf: int) -> np.ndarray:
        """(N, C, h, w) latents of frames made at ``qf`` -> (N, H, W, 3) uint8 images."""
        role, base = self.manifest.decoder_role(qf), self.manifest.latent.channels
        # The base decoder reads the base channels; an enhancement layer's, the layer's own.
        y = y_hat[:, :base] if role == "decoder" else y_hat[:, base:]
        added = self.decoder_for(qf)
        if added is not None:
            x = added.run(y)
        else:
            x = self.session(role).run(None, {"latent": y.astype(np.float32)})[0]
        images: np.ndarray = to_uint8_image(x)
        return images

    def picture(self, frame: bitstream.Frame) -> np.ndarray:
        """A parsed frame re-rendered: (H, W, 3) uint8, a padded whole image cut back to the
        captured size."""
        image: np.ndarray = self.reconstruct(self.decompress(frame)[None], frame.qf)[0]
        region = self.codebook.captured_region(frame)
        if region is not None:
            image = image[: region[1], : region[0]]
        return image
