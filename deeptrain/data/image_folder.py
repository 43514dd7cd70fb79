"""Decode a folder of images once into one uint8 tensor, cached on disk.

Layout (torchvision ``ImageFolder``): ``split_dir/<class>/**/<image>``; classes
are the sorted sub-folder names. Decoding 50,000 small JPEGs takes seconds; the
cache turns every later run into one ``torch.load``.

The cache file is named by a fingerprint of the split: its absolute path, the
relative path, size and mtime of every image, the class list, the channel count
and ``image_size``. Any change to the folder gives a new name, so a stale cache
is never read; it is written to a temporary file and renamed into place, so an
interrupted run never leaves a truncated cache behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence, Union

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from .arrays import ImageArrays
from .errors import DatasetNotFoundError, ImageDecodeError, ImageFolderError

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "DEEPTRAIN_CACHE_DIR"
CACHE_VERSION = 1  # bump when the cache format changes
# what torchvision.io.decode_image reads
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")
CHUNK = 256  # images per thread-pool task: amortizes the task overhead

ImageSize = Union[int, Sequence[int], None]


def as_hw(image_size: ImageSize) -> tuple[int, int] | None:
    """``32`` -> ``(32, 32)``; ``(H, W)`` stays; ``None`` stays."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return size


def default_cache_dir() -> Path:
    """``$DEEPTRAIN_CACHE_DIR`` if set, else ``~/.cache/deeptrain``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "deeptrain")


def train_root(data_dir: Path) -> Path:
    """``data_dir/train`` if it exists, else ``data_dir`` itself (class folders at the top)."""
    return data_dir / "train" if (data_dir / "train").is_dir() else data_dir


def find_classes(root: Path, strict: bool = True) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``root`` (ImageFolder's class order)."""
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")) \
        if root.is_dir() else []
    if not names and strict:
        raise DatasetNotFoundError(
            f"no class folders in {root.resolve()}: an image folder needs {root}/<class>/<image> "
            f"(or <data_dir>/train/<class>/<image>); set --data.data_dir to such a folder")
    return names


def check_class_folders(root: Path, classes: list[str]) -> None:
    """Every class folder of a training split holds at least one image (stops at the first one found):
    an empty one would be a class the model predicts but never sees."""
    empty = [name for name in classes if next(_iter_images(root / name), None) is None]
    if empty:
        raise ImageFolderError(
            f"class folder(s) {', '.join(str(root / name) for name in empty)} hold no images "
            f"({', '.join(IMAGE_EXTENSIONS)}); every class folder of {root.resolve()} needs images: "
            "add some, or remove the folder to drop the class")


def _iter_images(class_dir: Path):
    """Image paths under ``class_dir`` (recursively, hidden folders skipped), lazily, unsorted."""
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        yield from (os.path.join(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS))


def _class_images(class_dir: Path) -> list[str]:
    """Image paths under ``class_dir`` (recursively, hidden folders skipped), unsorted."""
    return list(_iter_images(class_dir))


def list_images(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Relative paths (sorted per class) and labels of the images in ``split_dir``."""
    present = find_classes(split_dir)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise ValueError(f"{split_dir} has class folders {unknown} that the training split lacks; "
                         f"training classes: {classes}")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(os.path.relpath(f, split_dir) for f in _class_images(split_dir / name))
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of "
                                   f"{split_dir.resolve()}")
    return files, labels


def first_image(split_dir: Path, classes: list[str]) -> Path:
    """The image that ``list_images`` would list first, reading one class folder only."""
    for name in classes:
        found = _class_images(split_dir / name)
        if found:
            return Path(min(found, key=lambda f: os.path.relpath(f, split_dir)))
    raise DatasetNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of "
                               f"{split_dir.resolve()}")


def peek_shape(split_dir: Path, classes: list[str], image_size: ImageSize = None) -> tuple[int, int, int]:
    """(C, H, W) from the header of the first image (or ``image_size``), without decoding pixels."""
    channels, hw = read_header(first_image(split_dir, classes))
    return (channels, *(as_hw(image_size) or hw))


def read_header(path: Path) -> tuple[int, tuple[int, int]]:
    """Channels we decode to (1 for grayscale, else 3) and (H, W), from the file header."""
    try:
        with Image.open(path) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            return (1 if gray else 3), (im.height, im.width)
    except Exception as err:
        raise ImageDecodeError(f"cannot read image {path}: {err}") from err


def fingerprint(split_dir: Path, files: list[str], parts: Sequence[object]) -> str:
    """SHA-256 of the absolute path, every file's (relative path, size, mtime) and ``parts``."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{split_dir.resolve()}|{list(parts)}".encode())
    for rel in files:
        st = os.stat(split_dir / rel)
        h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _cache_prefix(split_dir: Path) -> str:
    resolved = str(split_dir.resolve())
    tag = "-".join(split_dir.resolve().parts[-2:]).replace(os.sep, "_")
    return f"{tag}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}-"


def load_split(split_dir: Path, classes: list[str], image_size: ImageSize = None,
               cache_dir: Path | None = None, shape: tuple[int, int, int] | None = None) -> ImageArrays:
    """Images ``(N, C, H, W)`` uint8, labels ``(N,)`` int64 and file names (``<split>/<class>/<file>``)
    of one split, from the cache if valid.

    ``shape`` forces (C, H, W) (the test split must match the training split);
    by default C and (H, W) come from the first image, or (H, W) from ``image_size``.
    """
    files, labels = list_images(split_dir, classes)
    if shape is None:
        channels, hw = read_header(split_dir / files[0])
        shape = (channels, *(as_hw(image_size) or hw))
    key = fingerprint(split_dir, files, [classes, shape, as_hw(image_size)])
    names = [f"{split_dir.name}/{rel}" for rel in files]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    prefix = _cache_prefix(split_dir)
    path = cache_dir / "image_folder" / f"{prefix}{key[:24]}.pt"
    if path.exists():
        try:
            cached = torch.load(path, weights_only=True)
        except Exception as err:  # unreadable (e.g. another program truncated it): rebuild
            log.warning("ignoring unreadable cache %s (%s)", path, err)
            cached = {}
        if cached.get("key") == key:
            log.info("loaded %d cached images of %s from %s", len(cached["labels"]), split_dir, path)
            return ImageArrays(cached["images"], cached["labels"], names)
    images = decode_all(split_dir, files, shape, resize=as_hw(image_size) is not None)
    labels_t = torch.tensor(labels, dtype=torch.int64)
    try:
        _save_atomic({"key": key, "images": images, "labels": labels_t}, path, prefix)
    except (OSError, RuntimeError) as err:  # torch.save to a full disk raises RuntimeError("file write failed")
        warnings.warn(f"could not cache the decoded images in {path} ({err}); training goes on, and the next "
                      f"run decodes them again (free space there or set {CACHE_DIR_ENV} to a writable folder)",
                      stacklevel=2)
    return ImageArrays(images, labels_t, names)


def _save_atomic(obj: dict, path: Path, prefix: str) -> None:
    """Write to a temporary file in the same folder, then rename; drop older caches of this split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    for old in path.parent.glob(f"{prefix}*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    log.info("cached %d images to %s", len(obj["labels"]), path)


def decode_all(split_dir: Path, files: list[str], shape: tuple[int, int, int], resize: bool) -> Tensor:
    """Decode ``files`` into one ``(N, *shape)`` uint8 tensor with a thread pool.

    JPEG/PNG decoding in torchvision releases the GIL, so threads scale with cores.
    Without ``resize``, an image whose size differs from ``shape`` is an error.
    """
    out = torch.empty((len(files), *shape), dtype=torch.uint8)
    workers = min(32, os.cpu_count() or 1)
    say = _announce if len(files) >= ANNOUNCE_FROM else log.info  # a first decode of a real dataset takes ~10-20 s
    say("decoding %d images of %s (%s) with %d threads, once: later runs read the cache", len(files), split_dir,
        "x".join(map(str, shape)), workers)
    start = time.perf_counter()
    chunks = range(0, len(files), CHUNK)

    def work(i: int) -> int:
        for j, rel in enumerate(files[i:i + CHUNK], start=i):
            out[j] = _decode_one(split_dir / rel, shape, resize)
        return min(CHUNK, len(files) - i)

    with ThreadPoolExecutor(workers) as pool, _progress(len(files), split_dir) as bar, warnings.catch_warnings():
        # torchvision >= 0.29 warns on every decode that torchcodec will take over; once is enough
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        for done in pool.map(work, chunks):  # in order: the first bad file in order raises first
            bar.update(done)
    say("decoded %d images in %.1f s", len(files), time.perf_counter() - start)
    return out


ANNOUNCE_FROM = 1000  # images: smaller folders decode in a blink


def _announce(message: str, *args: object) -> None:
    """One line on stderr whatever the logging setup (deeptrain configures none)."""
    print(message % args, file=sys.stderr, flush=True)


def _decode_one(path: Path, shape: tuple[int, int, int], resize: bool) -> Tensor:
    mode = ImageReadMode.GRAY if shape[0] == 1 else ImageReadMode.RGB
    try:
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        image = decode_image(data, mode=mode)  # (C, H, W) uint8
    except Exception as err:
        raise ImageDecodeError(f"cannot decode image {path}: {err}") from err
    if tuple(image.shape[1:]) != shape[1:]:
        if not resize:
            raise ImageDecodeError(
                f"image {path} is {image.shape[1]}x{image.shape[2]} (HxW) but the first image of the split is "
                f"{shape[1]}x{shape[2]}; set --data.image_size to resize all images to one size")
        image = TF.resize(image, list(shape[1:]), antialias=True)
    return image


def _progress(total: int, split_dir: Path):
    from tqdm.auto import tqdm

    # a bar on a terminal only: log files get the two log lines instead
    return tqdm(total=total, desc=f"decoding {split_dir.name}", unit="img", file=sys.stderr,
                disable=None if total >= ANNOUNCE_FROM else True, leave=False)
