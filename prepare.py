"""Dataset preparation, an offline tool: turn a folder of raw videos (any nesting, .gif and the
containers PyAV decodes) into the prepared format that train.py --data reads fast (tar shards
of JPEG frames at one size and frame rate; the format is described in videos.py, above
PREPARED), describe a prepared folder, and preview the built-in synthetic data.

    python prepare.py --src RAW --dst PREPARED --size 128 --fps 25   # videos -> shards (resumes)
    python prepare.py info PREPARED                                    # what it holds
    python prepare.py preview --frames 100 --size 128 --n 16           # synthetic grid, timed

Nothing of the project imports this file; training reads the shards with videos.ShardVideos.
"""
import argparse
import collections
import csv
import io
import json
import math
import multiprocessing
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageSequence

from data import SyntheticVideos
from models import PRESETS
from videos import (AV_EXTS, PREPARED, VAL_FRACTION, clip_span, held_out, read_prepared,
                    resize_crop, video_grid, write_gif)

try:
    import av  # PyAV: optional, only decoding .mp4 (and other container) sources needs it
except ImportError:
    av = None

SOURCE_EXTS = (".gif",) + AV_EXTS
SPLITS = {"train": "train", "val": "val", "valid": "val", "validate": "val", "test": "test"}


# ----------------------------------------------------------------------------------------------
# Decoding a source video at a fixed frame rate

def _timed_frames(path: Path) -> Iterator[tuple[float, object]]:
    """(time in seconds, frame) of each frame of a video, then (end of the last frame, None). A
    frame is a PIL image or a PyAV frame, converted only if used (_image)."""
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            t = 0.0
            for f in ImageSequence.Iterator(im):
                yield t, f.convert("RGB")
                t += f.info.get("duration", 100) / 1000  # ms; Pillow updates it per frame
            yield t, None
        return
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-threaded decoding
        step = 1 / float(stream.average_rate or 25)
        t = None
        for k, f in enumerate(container.decode(stream)):
            t = float(f.time) if f.time is not None else k * step
            yield t, f
        if t is None:
            raise ValueError("no frames")
        yield t + step, None


def _image(frame, size: int) -> Image.Image:
    """A decoded frame as a PIL image. A PyAV frame with a short side above 2 size is first
    shrunk to 2 size in FFmpeg's scaler (area averaging), for the final antialiased resize to
    finish: converting a whole 720p frame to RGB costs more than decoding it (2.3x faster)."""
    if isinstance(frame, Image.Image):
        return frame
    k = min(frame.width, frame.height) / (2 * size)
    if k <= 1:
        return frame.to_image()
    return frame.reformat(width=round(frame.width / k), height=round(frame.height / k), format="rgb24",
                          interpolation="AREA").to_image()


def resample(timed: Iterable[tuple[float, object]], fps: float) -> Iterator[object]:
    """The frames showing at t = 0, 1/fps, 2/fps, ... (before the end), t measured from the
    first frame: each output time takes the latest frame at or before it, so frames are
    dropped (faster source) or repeated (slower source) by timestamp, never blended."""
    k, shown, t0 = 0, None, None
    for t, frame in timed:
        t0 = t if t0 is None else t0
        while shown is not None and k / fps < t - t0 - 1e-6:  # output times before this frame
            yield shown
            k += 1
        shown = frame


def _prepare_one(job: tuple[Path, int, float, int, int]) -> tuple[str, list[bytes] | str]:
    """One source video -> ("ok", JPEG bytes of its resampled, resized and cropped frames), or
    ("failed" | "short", the reason). Runs in a worker process: returns, never raises."""
    path, size, fps, min_frames, quality = job
    try:
        jpegs, last, last_jpeg = [], None, None
        for frame in resample(_timed_frames(path), fps):
            if frame is not last:  # a repeated frame is encoded once
                out = io.BytesIO()
                resize_crop(_image(frame, size), size).save(out, "JPEG", quality=quality)
                last, last_jpeg = frame, out.getvalue()
            jpegs.append(last_jpeg)
    except Exception as e:  # decoders raise many types for bad bytes: one reason string
        return "failed", f"cannot read it ({type(e).__name__}: {e})"
    if len(jpegs) < min_frames:
        return "short", f"too short: {len(jpegs)} frames at {fps:g} fps, --min-frames {min_frames}"
    return "ok", jpegs


# ----------------------------------------------------------------------------------------------
# The shard writer (the format: videos.py, above PREPARED)

class _ShardWriter:
    """The shard being written: tar, spans and index under .tmp names, renamed when closed."""

    def __init__(self, dst: Path, number: int):
        self.name = dst / f"shard-{number:05d}"
        self.tar = tarfile.open(self.name.with_suffix(".tar.tmp"), "w")
        self.spans, self.videos = [], []

    def add(self, key: str, jpegs: list[bytes], entry: dict) -> None:
        self.videos.append({"key": key, **entry, "frames": len(jpegs), "first": len(self.spans)})
        for k, jpeg in enumerate(jpegs):
            info = tarfile.TarInfo(f"{key}/{k:05d}.jpg")
            info.size = len(jpeg)
            self.tar.addfile(info, io.BytesIO(jpeg))
            padded = -(-len(jpeg) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            self.spans.append((self.tar.offset - padded, len(jpeg)))  # the data follows its header

    def close(self) -> int:
        """Finish the shard (index last); returns its bytes on disk."""
        self.tar.close()
        with open(self.name.with_suffix(".npy.tmp"), "wb") as f:
            np.save(f, np.array(self.spans, np.int64).reshape(-1, 2))
        for suffix in (".tar", ".npy"):
            with open(self.name.with_suffix(suffix + ".tmp"), "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.name.with_suffix(suffix + ".tmp"), self.name.with_suffix(suffix))
        _write_atomic(self.name.with_suffix(".json"), json.dumps({"videos": self.videos}))
        return sum(self.name.with_suffix(s).stat().st_size for s in (".tar", ".npy", ".json"))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Labels and splits, prepare and info

def _labels(src: Path, files: list[Path], labels: str, val_fraction: float):
    """(classes, {file: (y, split) or a reason it has none}) from the labels source: 'folders'
    (the first folder under src is the class, as UCF-101 ships), 'none' (unconditional), or a
    Kinetics-style CSV (label,youtube_id,time_start,time_end[,split]; clips named
    <youtube_id>_<start:06d>_<end:06d>.<ext>). Without a split column, held_out(val_fraction)."""
    def split_of(key):
        return "val" if held_out(key, val_fraction) else "train"
    keys = {f: f.relative_to(src).as_posix() for f in files}
    if labels == "none":
        return [], {f: (0, split_of(keys[f])) for f in files}
    if labels == "folders":
        classes = sorted({f.relative_to(src).parts[0] for f in files if len(f.relative_to(src).parts) > 1})
        if not classes:
            raise ValueError(f"{src}: no video lies in a class folder (src/<class>/.../<video>); "
                             f"pass --labels none for unconditional data, or --labels CSV")
        y = {c: k for k, c in enumerate(classes)}
        return classes, {f: (y[f.relative_to(src).parts[0]], split_of(keys[f]))
                         if len(f.relative_to(src).parts) > 1 else "not in a class folder" for f in files}
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{labels}: want a CSV with columns {sorted(need)} (and optionally split), "
                         f"as Kinetics ships; got {sorted(rows[0]) if rows else 'no rows'}")
    classes = sorted({r["label"] for r in rows if r["label"]})
    y, by_name = {c: k for k, c in enumerate(classes)}, {}
    for r in rows:
        if r["label"]:
            name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            by_name[name] = (y[r["label"]], r.get("split"))
    found = {}
    for file in files:
        if file.stem not in by_name:
            found[file] = f"not in {labels}"
            continue
        label, split = by_name[file.stem]
        found[file] = (label, SPLITS.get((split or "").lower()) or split_of(keys[file]))
    return classes, found


def prepare(src: str | Path, dst: str | Path, size: int = 128, fps: float = 25, labels: str = "folders",
            workers: int = 0, val_fraction: float = VAL_FRACTION, min_frames: int = 32,
            shard_mb: float = 512, quality: int = 90) -> dict:
    """Turn every video under src (SOURCE_EXTS, any nesting) into shards in dst: frames resampled
    to fps, the shorter side resized to size and centre-cropped, JPEG-encoded. Rerunning
    continues: videos in finished shards are skipped, a shard cut short by a kill is redone.
    A video that fails or is too short is logged (dst/failed.txt) and the run goes on.
    Returns the summary counts."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ValueError(f"--src {src}: no such directory")
    files = sorted((p for p in src.rglob("*") if p.suffix.lower() in SOURCE_EXTS and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(src).parts)),
                   key=lambda p: p.relative_to(src).as_posix())
    if not files:
        raise ValueError(f"{src}: no videos ({', '.join(SOURCE_EXTS)}) under it")
    needs_av = [p for p in files if p.suffix.lower() in AV_EXTS]
    if needs_av and av is None:
        raise ImportError(f"{needs_av[0]} and {len(needs_av) - 1} more need PyAV to decode: "
                          f"pip install av (GIFs alone do not)")
    classes, found = _labels(src, files, labels, val_fraction)
    meta = {"format": 1, "size": size, "fps": fps, "labels": labels if labels in ("folders", "none")
            else os.path.abspath(labels), "classes": classes, "val_fraction": val_fraction}
    dst.mkdir(parents=True, exist_ok=True)
    if (dst / PREPARED).exists():
        old = json.loads((dst / PREPARED).read_text())
        if old != meta:
            diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
            raise ValueError(f"{dst} was prepared with other settings (then vs now: {diff}); rerun "
                             f"with the same flags to continue it, or pass another --dst")
    else:
        _write_atomic(dst / PREPARED, json.dumps(meta, indent=1))

    # Resume: finished shards count; a .tmp or a shard without its index is from a killed run.
    for p in dst.glob("shard-*"):
        if p.name.endswith(".tmp") or not p.with_suffix(".json").exists():
            p.unlink()
    _, done = read_prepared(dst)
    done_keys = {v["key"] for _, v in done}
    numbers = [int(p.stem.split("-")[1]) for p in dst.glob("shard-*.json")]
    todo = [f for f in files if f.relative_to(src).as_posix() not in done_keys]
    counts = {"done": 0, "skipped": len(files) - len(todo), "failed": 0, "too short": 0, "bytes": 0}
    failed_log = open(dst / "failed.txt", "w")
    jobs = [(f, size, fps, min_frames, quality) for f in todo if isinstance(found[f], tuple)]
    for f in todo:
        if not isinstance(found[f], tuple):
            counts["failed"] += 1
            print(f"{f}: {found[f]}", file=failed_log, flush=True)
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    writer, number, t0, shown = None, max(numbers, default=-1) + 1, time.time(), 0.0
    try:
        results = pool.imap(_prepare_one, jobs) if pool else map(_prepare_one, jobs)
        for k, ((path, *_), (status, out)) in enumerate(zip(jobs, results)):
            if status != "ok":
                counts["failed" if status == "failed" else "too short"] += 1
                print(f"{path}: {out}", file=failed_log, flush=True)
            else:
                writer = writer or _ShardWriter(dst, number)
                y, split = found[path]
                writer.add(path.relative_to(src).as_posix(), out, {"src": str(path), "y": y, "split": split})
                counts["done"] += 1
                if writer.tar.offset >= shard_mb * 2**20:
                    counts["bytes"] += writer.close()
                    writer, number = None, number + 1
            if time.time() - shown > 1 or k == len(jobs) - 1:
                shown, rate = time.time(), (k + 1) / (time.time() - t0)
                print(f"\r{k + 1}/{len(jobs)} videos | {rate:.2f} videos/s | failed {counts['failed']} "
                      f"| too short {counts['too short']} | {_size(counts['bytes'])} in finished shards",
                      end="", file=sys.stderr, flush=True)
        if writer:
            counts["bytes"] += writer.close()
    finally:
        failed_log.close()
        if pool:
            pool.terminate()
    print(file=sys.stderr)
    _, videos = read_prepared(dst)
    on_disk = sum(p.stat().st_size for p in dst.glob("shard-*"))
    counts["estimate"] = on_disk / max(len(videos), 1) * (len(videos) + counts["failed"] + counts["too short"])
    print(f"{dst}: {counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} "
          f"failed, {counts['too short']} too short (reasons in {dst / 'failed.txt'}) | "
          f"{_size(counts['bytes'])} written | {_size(on_disk / max(len(videos), 1))} per video: "
          f"about {_size(counts['estimate'])} for all {len(files)} videos of {src}")
    return counts


def _size(n: float) -> str:
    return next(f"{n / 2**e:.1f} {unit}" for e, unit in ((30, "GB"), (20, "MB"), (10, "kB"), (0, "B"))
                if n >= 2**e or e == 0)


def info(root: str | Path) -> str:
    """What a prepared folder holds: videos per class and split, frames per video, fps, size,
    bytes on disk, and the videos too short for each stage of each preset (models.PRESETS)."""
    root = Path(root)
    if not (root / PREPARED).is_file():
        raise ValueError(f"{root}: no {PREPARED}; make it with python prepare.py --src RAW --dst {root}")
    meta, videos = read_prepared(root)
    frames = np.array([v["frames"] for _, v in videos] or [0])
    on_disk = sum(p.stat().st_size for p in root.glob("shard-*"))
    splits = sorted({v["split"] for _, v in videos})
    lines = [f"{root}: {len(videos)} videos in {len(list(root.glob('shard-*.json')))} shards, "
             f"{meta['size']}x{meta['size']} at {meta['fps']:g} fps, {_size(on_disk)} on disk "
             f"({_size(on_disk / max(len(videos), 1) * 1000)} per 1,000 videos)",
             f"frames per video: min {frames.min()}, median {np.median(frames):g}, max {frames.max()}",
             "class | " + " | ".join(splits)]
    count = collections.Counter((v["y"], v["split"]) for _, v in videos)
    for y, name in enumerate(meta["classes"] or ["(unconditional)"]):
        lines.append(f"{name} | " + " | ".join(str(count[y, s]) for s in splits))
    for preset, rows in PRESETS.items():  # a preset's stages share its clips, so its lengths
        for span in sorted({clip_span(cfg.clip_frames, cfg.frame_stride) for cfg in rows}):
            stages = ", ".join(str(cfg.stage) for cfg in rows if clip_span(cfg.clip_frames, cfg.frame_stride) == span)
            short = [v["key"] for _, v in videos if v["frames"] < span]
            lines.append(f"{preset} stage{'s' * (',' in stages)} {stages} (clips of {span} frames): "
                         f"{len(short)} too short" + (": " + ", ".join(short[:5]) + (" ..." if len(short) > 5 else "")
                                                      if short else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The command line: prepare a dataset (no command); describe a prepared one; preview the
# synthetic data

def preview(frames: int, size: int, n: int, seed: int, out: str) -> None:
    """Render n synthetic clips, print the rendering rate and write them as one grid GIF."""
    videos = SyntheticVideos(frames, size, seed=seed)
    t0 = time.perf_counter()
    clips = np.stack([videos[i][0] for i in range(n)])  # (n, T, S, S, 3)
    seconds = time.perf_counter() - t0
    print(f"rendered {n} clips of {frames}@{size}x{size} in {seconds:.2f} s: {n / seconds:.1f} clips/s")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_gif(out, video_grid(clips, nrow=math.ceil(math.sqrt(n))))
    print(f"wrote {out}")


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Prepare a folder of videos as shards (no command); "
                                "describe a prepared folder (info); preview the synthetic data (preview).")
    p.add_argument("--src", help=f"folder of videos ({' '.join(SOURCE_EXTS)}), any nesting")
    p.add_argument("--dst", help="output folder; rerunning continues it")
    p.add_argument("--size", type=int, default=128, help="shorter side resized to this, then centre-cropped")
    p.add_argument("--fps", type=float, default=25, help="frames per second kept (dropped or repeated by timestamp)")
    p.add_argument("--labels", default="folders",
                   help="'folders' (the first folder under --src is the class, as UCF-101), 'none' "
                        "(unconditional, as BDD100K) or a Kinetics CSV (label,youtube_id,time_start,time_end,split)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding processes (0 or 1: in this process)")
    p.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                   help="share of videos held out (by a hash of the name) where no CSV split column says")
    p.add_argument("--min-frames", type=int, default=32, help="videos with fewer frames are left out as too short")
    p.add_argument("--shard-mb", type=float, default=512, help="a shard is closed once it holds this many MB")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored frames")
    sub = p.add_subparsers(dest="command")
    show = sub.add_parser("info", help="videos per class and split, frame counts, size, too-short videos")
    show.add_argument("root", help="a folder prepare.py wrote")
    look = sub.add_parser("preview", help="write a grid of synthetic videos and time their rendering")
    look.add_argument("--frames", type=int, default=100, help="frames per clip")
    look.add_argument("--size", type=int, default=128, help="height and width of a clip")
    look.add_argument("--n", type=int, default=16, help="number of clips to render and show")
    look.add_argument("--seed", type=int, default=0, help="dataset seed")
    look.add_argument("--out", default="out/synthetic.gif", help="grid GIF to write")
    args = p.parse_args(argv)
    if args.command is None and not (args.src and args.dst):
        p.error("preparing needs --src and --dst (or a command: info, preview)")
    return args


def main(argv=None):
    args = get_args(argv)
    if args.command == "info":
        print(info(args.root))
        return None
    if args.command == "preview":
        return preview(args.frames, args.size, args.n, args.seed, args.out)
    return prepare(args.src, args.dst, args.size, args.fps, args.labels, args.workers,
                   args.val_fraction, args.min_frames, args.shard_mb, args.quality)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
