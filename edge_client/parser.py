"""spic-edge's command line: flags, their help, and examples.

Each flag that is a setting (``EdgeSettings``) gets its ``SPIC_EDGE_*`` variable and its default
appended to its help from the settings model itself, so help and behaviour cannot drift apart.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from edge_client.settings import EdgeSettings
from shared.entrypoints import package_version

S = argparse.SUPPRESS  # a flag not given is absent, so the environment and defaults can speak

EXAMPLES = """\
examples:
  spic-edge encode photo.jpg --out frames/            .spic files; bytes, bpp, ms per stage
  spic-edge encode photo.jpg --out frames/ --bpp 0.1  a rate budget instead of a QF
  spic-edge send photo.jpg frames/old.spic --url http://127.0.0.1:8000 --api-key KEY
  spic-edge watch /var/camera --url http://cloud:8000 --api-key KEY --keep-mb 256
  SPIC_EDGE_URL=http://cloud:8000 SPIC_EDGE_API_KEY=KEY spic-edge watch /var/camera
  spic-edge stream clip.mp4 --url http://cloud:8000 --fps 5 --json   a fixed camera's video

Every setting can come from a SPIC_EDGE_* variable (named in each flag's help); a flag wins.
Errors are one line on stderr: exit status 1, 2 for bad settings."""

SUB_EXAMPLES = {
    "encode": """\
examples:
  spic-edge encode photo.jpg --out frames/
  spic-edge encode *.jpg --out frames/ --qf 4 --codec huffman --json
  spic-edge encode 1920x1080.jpg --out frames/ --whole-image   padded to 1920x1088""",
    "send": """\
examples:
  spic-edge send photo.jpg --url http://127.0.0.1:8000 --api-key KEY
  spic-edge send frames/*.spic --url http://127.0.0.1:8000     frames made by encode, as they are
  SPIC_EDGE_URL=http://127.0.0.1:8000 spic-edge send photo.jpg --json""",
    "watch": """\
examples:
  spic-edge watch /var/camera --url http://cloud:8000 --api-key KEY
  spic-edge watch /var/camera --url http://cloud:8000 --keep-hours 6 --keep-mb 256
  spic-edge watch /var/camera --url http://cloud:8000 --queue-dir /data/spic-queue -v""",
    "stream": """\
examples:
  spic-edge stream clip.mp4 --url http://cloud:8000 --api-key KEY --fps 5 --json
  spic-edge stream rtsp://cam/stream --url http://cloud:8000 --key-interval 300
  spic-edge stream /dev/video0 --url http://cloud:8000 --fps 2 --max-seconds 3600""",
}


def _fmt() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spic-edge",
        description="SPIC camera side: encode images into frames of a few hundred bytes, "
        "send them to the cloud, or watch a camera's folder.",
        epilog=EXAMPLES,
        formatter_class=_fmt(),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bundle", type=Path, default=S, metavar="DIR", help="model bundle folder (manifest.json)"
    )
    common.add_argument(
        "--qf",
        type=int,
        default=S,
        help="quantization factor, the bundle's default unless given: higher, more bits",
    )
    common.add_argument(
        "--bpp",
        type=float,
        default=S,
        help="target bits/px: the bundle's QF measured to fit it (instead of --qf)",
    )
    common.add_argument(
        "--codec", default=S, choices=["rans", "huffman"], help="entropy coder of the frames"
    )
    common.add_argument(
        "--threads", type=int, default=S, help="encoder threads (a camera shares its cores)"
    )
    common.add_argument(
        "--whole-image",
        action="store_true",
        default=S,
        help="encode the whole image instead of the bundle's center crop; sides are padded to "
        "the stride (the frame keeps the captured size), and an image over the cloud's limits "
        "is refused before it is encoded",
    )
    common.add_argument(
        "--int8", action="store_true", default=S, help="use the bundle's INT8 encoder (spic-int8)"
    )
    common.add_argument("--json", action="store_true", help="print one JSON object per image")
    common.add_argument("-v", "--verbose", action="store_true", help="log INFO lines too")
    net = argparse.ArgumentParser(add_help=False)
    net.add_argument(
        "--url", default=S, help="cloud base URL, e.g. http://127.0.0.1:8000 (required)"
    )
    net.add_argument(
        "--api-key", default=S, help="upload key, sent as Authorization: Bearer (none: auth off)"
    )
    net.add_argument(
        "--ca-cert",
        type=Path,
        default=S,
        metavar="FILE",
        help="CA bundle or pinned certificate an https:// cloud must present",
    )
    net.add_argument("--device-id", default=S, help="this camera's id, sent as X-Device-Id")
    net.add_argument("--timeout", type=float, default=S, help="seconds per HTTP attempt")
    net.add_argument("--retries", type=int, default=S, help="retries per frame after the first")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, parents: list[argparse.ArgumentParser], text: str
    ) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=parents,
            help=text,
            description=textwrap.fill(text, 78),
            epilog=SUB_EXAMPLES[name],
            formatter_class=_fmt(),
        )

    enc = command("encode", [common], "write .spic frames; print bytes, bpp and ms per stage")
    enc.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="images to encode")
    enc.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the .spic frames"
    )
    snd = command(
        "send", [common, net], "encode images (or take .spic frames as they are) and upload them"
    )
    snd.add_argument(
        "images", nargs="+", type=Path, metavar="FILE", help="images, or .spic frames to upload"
    )
    w = command(
        "watch",
        [common, net],
        "camera mode: encode new images in FOLDER, queue the frames on disk, upload them in "
        "capture order, keep going while the cloud is down",
    )
    w.add_argument("folder", type=Path, help="the folder the camera writes images into")
    w.add_argument("--queue-dir", type=Path, default=S, help="frame queue (FOLDER/.spic-queue)")
    w.add_argument(
        "--done-dir", type=Path, default=S, help="ring of sent originals (FOLDER/.spic-done)"
    )
    w.add_argument(
        "--keep-hours", type=float, default=S, help="originals older than this are deleted"
    )
    w.add_argument(
        "--keep-mb", type=float, default=S, help="originals past this size, oldest first, too"
    )
    w.add_argument(
        "--no-refine",
        dest="refine",
        action="store_false",
        default=S,
        help="do not answer the cloud's requests for better pictures of frames sent",
    )
    w.add_argument("--interval", type=float, default=S, help="seconds between scans")
    w.add_argument("--max-queue-mb", type=float, default=S, help="queue size bound")
    w.add_argument("--ttl-hours", type=float, default=S, help="undelivered frames expire")
    w.add_argument(
        "--policy",
        choices=["reject_new", "drop_oldest"],
        default=S,
        help="what a full queue does with a new frame",
    )
    w.add_argument("--settle-s", type=float, default=S, help="wait until a file is unchanged")
    w.add_argument(
        "--give-up-s",
        type=float,
        default=S,
        help="unreadable for this long: moved to .spic-failed",
    )
    w.add_argument(
        "--stream",
        action="store_true",
        help="send the folder's images as one stream of key, delta and skip frames",
    )
    _stream_flags(w)
    w.add_argument(
        "--exit-when-idle", action="store_true", help="stop once the folder and the queue are empty"
    )
    w.add_argument(
        "--max-seconds", type=float, default=None, help="stop after this long (tests, demos)"
    )
    st = command(
        "stream",
        [common, net],
        "fixed-camera mode: sample a video file, URL or device (ffmpeg) at --fps and send key, "
        "delta and skip frames of one stream through the disk queue",
    )
    st.add_argument("source", help="video file, rtsp:// or http:// URL, or /dev/videoN")
    st.add_argument("--fps", type=float, default=None, help="frames per second sampled (all)")
    _stream_flags(st)
    st.add_argument("--max-seconds", type=float, default=None, help="stop after S s of video")
    st.add_argument(
        "--heartbeat",
        type=float,
        default=0.0,
        metavar="S",
        help="send a skip frame (nothing changed) at most every S seconds of video, withholding "
        "the others; the cloud counts them from the next frame (0: send every skip)",
    )
    st.add_argument("--queue-dir", type=Path, default=S, help="frame queue (./.spic-stream-queue)")
    st.add_argument("--max-queue-mb", type=float, default=S, help="queue size bound")
    st.add_argument("--ttl-hours", type=float, default=S, help="undelivered frames expire")
    for parser in (p, enc, snd, w, st):
        _name_settings(parser)
    return p


def _stream_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-interval", type=int, default=300, help="a key frame every N frames (300)"
    )
    parser.add_argument(
        "--position-changes",
        type=int,
        default=1,
        metavar="N",
        help="send a latent position when at least N of its channels changed (1: every change, "
        "so every answer is the frame's own; more drops sensor-noise flicker, lossy); a frame "
        "with nothing to send is a header-only skip",
    )
    parser.add_argument(
        "--guard",
        action="store_true",
        help="semantic guard: run the bundle's classifier on the camera and send only the "
        "changes that move its answer (every answer that of the frame coded alone, a fraction "
        "of the lossless stream's bytes; ~1.5 classifier runs of edge CPU per frame)",
    )
    parser.add_argument("--stream-id", type=int, default=0, help="this camera's stream, 0..65535")


def _name_settings(parser: argparse.ArgumentParser) -> None:
    """Append '[SPIC_EDGE_X; default: Y]' to the help of every flag that is a setting."""
    for action in parser._actions:
        field = EdgeSettings.model_fields.get(action.dest)
        if field is None or not action.option_strings or "SPIC_EDGE_" in (action.help or ""):
            continue
        if field.default_factory is not None:
            default = "; default: the host name"
        elif field.default is None:  # the help says what happens instead
            default = ""
        elif isinstance(field.default, Path):  # a shipped bundle: its name, not this host's path
            default = f"; default: the shipped {field.default.name}"
        else:
            default = f"; default: {field.default}"
        action.help = f"{action.help} [SPIC_EDGE_{action.dest.upper()}{default}]"
