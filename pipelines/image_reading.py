"""Reading images: 32x32 RGB ``uint8`` pixels from files, archives, arrays and datasets.

Reading (:func:`read_images`) turns any of these into 32x32 RGB ``uint8`` pixels:

* a folder tree of PNG/JPEG files, where the folder holding a file is its label
  (``root/<label>/<file>``, also ``root/train/<label>/<file>``; files directly under
  the root have no label);
* a ``.tar``/``.tar.gz``/``.tgz`` archive of such a tree, read in memory (nothing is
  extracted; an archive with an unsafe member path -- absolute, ``..``, or a link --
  is refused as a whole);
* a single PNG/JPEG file;
* ``.npz``/``.npy`` arrays, loaded with ``allow_pickle=False`` (CIFAR's python
  "batches" are pickles and are deliberately not read: convert them to ``.npz``).
  An ``.npz`` holds the images under ``images`` (or ``x``, ``data``, ``pixels``, or
  its only array) and optionally labels under ``labels`` (or ``y``, ``label``);
* ``hf:NAME`` -- a Hugging Face dataset, from the Hub or a ``save_to_disk`` folder,
  its first image column and its ``label`` column (class names when it has them).

Images of another size are resized to 32x32 (no crop; bicubic), any mode is converted
to RGB. Image arrays may be ``(n, 32, 32, 3)``, ``(n, 3, 32, 32)``, ``(n, H, W[, 3])``
(resized) or ``(n, 3072)`` (32x32x3 in height-width-channel order), uint8 or floats in
[0, 1].
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from semhash.image_hasher import IMAGE_DIMS, IMAGE_SIDE
from semhash.pipelines.hf import load_hf_dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARRAY_IMAGE_KEYS = ("images", "x", "data", "pixels")
ARRAY_LABEL_KEYS = ("labels", "y", "label")



# Bounds on one image file: its bytes, and the pixels its header claims, checked before
# decoding (a few hundred bytes of PNG can claim a 30000x30000 image).
MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 40_000_000


class ImageError(ValueError):
    """An image file that cannot be read: not a PNG/JPEG, truncated, or too large."""


class ImageWarning(UserWarning):
    """Some image files could not be decoded and were skipped."""


@dataclass
class ImageSet:
    """What :func:`read_images` returns (it unpacks as a 4-tuple too)."""

    pixels: np.ndarray  # uint8 (n, 32, 32, 3)
    labels: list[str | None]
    ids: list[str]
    sources: list[str]

    def __iter__(self):
        return iter((self.pixels, self.labels, self.ids, self.sources))

    def __len__(self) -> int:
        return len(self.ids)


# ----------------------------------------------------------------------------- reading


def read_images(
    source: str | os.PathLike,
    *,
    subdir: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> ImageSet:
    """Read images as ``(pixels uint8 (n, 32, 32, 3), labels, ids, sources)``.

    ``subdir`` and ``split`` select a part of a folder tree or archive: images are read
    under ``<subdir>/<split>`` (either may be omitted; in an archive with one top-level
    folder, the path may also be given relative to it, e.g. ``split="train"`` for
    ``cifar10-jpg/train/...``). For ``hf:NAME`` ``split`` is the dataset split (default
    ``train``). ``limit`` keeps the first ``limit`` images (in sorted path order).
    ``ids`` are unique within the source (relative paths, ``name#row`` for arrays).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    text = str(source)
    if text.startswith("hf:"):
        return _read_hf(text[3:], split or "train", limit)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    prefix = "/".join(part.strip("/") for part in (subdir, split) if part)
    name = path.name.lower()
    if path.is_dir():
        return _read_folder(path, prefix, limit)
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return _read_tar(path, prefix, limit)
    if name.endswith(".npz") or name.endswith(".npy"):
        return _read_array_file(path, limit)
    if name.endswith(IMAGE_EXTENSIONS):
        pixels = decode_image(_read_image_file(path), str(path))
        return ImageSet(pixels[None], [None], [path.name], [str(path)])
    raise ValueError(
        f"cannot read images from {path}: expected a folder, a .tar(.gz) archive, a "
        f".png/.jpg file, a .npz/.npy array or hf:NAME"
    )


def decode_image(data: bytes, where: str = "the image") -> np.ndarray:
    """PNG/JPEG bytes to uint8 ``(32, 32, 3)`` RGB (resized when needed); :class:`ImageError`
    naming ``where`` for anything that is not a decodable image within the bounds."""
    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{where} is over {MAX_IMAGE_BYTES // 2**20} MiB; an image file may hold at most that")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"{where} claims {width}x{height} pixels; an image may have at most "
                                 f"{MAX_IMAGE_PIXELS:,}")
            return to_thumbnail(image)
    except ImageError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt, truncated or foreign files
        raise ImageError(f"{where} is not a PNG or JPEG image that can be decoded ({type(err).__name__}: {err})") from None


def _read_image_file(path: Path) -> bytes:
    """At most one byte over the bound: enough for decode_image to refuse a huge file."""
    with path.open("rb") as file:
        return file.read(MAX_IMAGE_BYTES + 1)


def to_thumbnail(image) -> np.ndarray:
    """A PIL image to uint8 ``(32, 32, 3)``: RGB, resized (without cropping) to 32x32."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (IMAGE_SIDE, IMAGE_SIDE):
        image = image.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8).copy()


def _collect(entries, limit, where: str) -> ImageSet:
    """Decode ``(id, label, source, read_bytes)`` entries; warn about undecodable ones."""
    pixels, labels, ids, sources, bad = [], [], [], [], []
    for image_id, label, origin, read in entries:
        if limit is not None and len(ids) >= limit:
            break
        try:
            pixels.append(decode_image(read(), image_id))
        except ImageError:
            bad.append(image_id)
            continue
        labels.append(label)
        ids.append(image_id)
        sources.append(origin)
    if bad:
        warnings.warn(
            f"{len(bad)} image files in {where} could not be decoded and were skipped, "
            f"e.g. {', '.join(bad[:3])}",
            ImageWarning,
            stacklevel=3,
        )
    if not ids:
        raise ValueError(f"no images found in {where} (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    return ImageSet(np.stack(pixels), labels, ids, sources)


def _label_of(relative: PurePosixPath) -> str | None:
    """The name of the folder holding the file (None for files directly under the root)."""
    return relative.parts[-2] if len(relative.parts) > 1 else None


def _read_folder(root: Path, prefix: str, limit: int | None) -> ImageSet:
    base = root / prefix if prefix else root
    if not base.is_dir():
        raise FileNotFoundError(f"no folder {prefix!r} in {root}")
    files = sorted(
        p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )

    def entries():
        for file in files:
            relative = PurePosixPath(file.relative_to(base).as_posix())
            image_id = PurePosixPath(file.relative_to(root).as_posix()).as_posix()
            yield image_id, _label_of(relative), str(file), lambda file=file: _read_image_file(file)

    return _collect(entries(), limit, str(base))


def check_member_name(name: str) -> None:
    """Refuse archive member paths that could escape an extraction folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ValueError(f"unsafe path in archive: {name!r}; refusing to read the archive")


def _read_tar(path: Path, prefix: str, limit: int | None) -> ImageSet:
    with tarfile.open(path, mode="r:*") as archive:
        members = archive.getmembers()
        for member in members:
            check_member_name(member.name)
            if member.issym() or member.islnk():
                raise ValueError(f"archive member {member.name!r} is a link; refusing to read the archive")
        files = [
            m for m in members
            if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        names = {m.name.strip("/"): m for m in files}
        base = _archive_base(names, prefix, path)
        wanted = sorted(name for name in names if not base or name.startswith(base + "/"))
        wanted = set(wanted[:limit] if limit is not None else wanted)
        # Read the members in archive order: a compressed stream cannot seek back cheaply.
        contents = {
            member.name.strip("/"): archive.extractfile(member).read(MAX_IMAGE_BYTES + 1)
            for member in files
            if member.name.strip("/") in wanted
        }

    def entries():
        for name in sorted(contents):
            relative = PurePosixPath(name[len(base) + 1 :] if base else name)
            yield name, _label_of(relative), f"{path}::{name}", lambda data=contents[name]: data

    return _collect(entries(), limit, f"{path}" + (f" under {base}/" if base else ""))


def _archive_base(names, prefix: str, path: Path) -> str:
    """The folder of the archive to read: ``prefix``, or ``<single top folder>/prefix``."""
    if not prefix:
        tops = {name.split("/", 1)[0] for name in names if "/" in name}
        return tops.pop() if len(tops) == 1 and all("/" in n for n in names) else ""
    if any(name.startswith(prefix + "/") for name in names):
        return prefix
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    if len(tops) == 1:
        nested = f"{tops.pop()}/{prefix}"
        if any(name.startswith(nested + "/") for name in names):
            return nested
    raise FileNotFoundError(f"no folder {prefix!r} in the archive {path}")


def _read_array_file(path: Path, limit: int | None) -> ImageSet:
    labels = None
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: cannot load without pickle ({err}); save plain arrays with np.savez") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            image_key = next((k for k in ARRAY_IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if image_key is None:
                raise ValueError(f"{path}: no image array; expected one of {ARRAY_IMAGE_KEYS}, found {keys}")
            images = loaded[image_key]
            label_key = next((k for k in ARRAY_LABEL_KEYS if k in keys), None)
            if label_key is not None:
                labels = loaded[label_key]
    else:
        images = loaded
    pixels = pixels_from_array(images, what=str(path))
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if len(labels) != len(pixels):
            raise ValueError(f"{path}: {len(labels)} labels for {len(pixels)} images")
        labels = [str(label) for label in labels.tolist()]
    else:
        labels = [None] * len(pixels)
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    ids = [f"{path.name}#{row}" for row in range(len(pixels))]
    return ImageSet(pixels, labels, ids, [f"{path}#{row}" for row in range(len(pixels))])


def pixels_from_array(images, what: str = "the array") -> np.ndarray:
    """An array of images in any supported layout to uint8 ``(n, 32, 32, 3)``."""
    from PIL import Image

    images = np.asarray(images)
    if images.dtype == object:
        raise ValueError(f"{what}: object arrays are not images")
    if images.ndim == 2 and images.shape[1] == IMAGE_DIMS:
        images = images.reshape(len(images), IMAGE_SIDE, IMAGE_SIDE, 3)
    elif images.ndim == 4 and images.shape[1] == 3 and images.shape[3] != 3:
        images = images.transpose(0, 2, 3, 1)  # channels first -> last
    elif images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=3)  # greyscale
    if images.ndim != 4 or images.shape[3] != 3 or len(images) == 0:
        raise ValueError(
            f"{what}: expected images of shape (n, {IMAGE_DIMS}), (n, 32, 32, 3), (n, 3, 32, 32), "
            f"(n, H, W, 3) or (n, H, W), got {np.shape(images)}"
        )
    if images.dtype != np.uint8:
        images = images.astype(np.float64)
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1 + 1e-6:
            raise ValueError(f"{what}: non-uint8 pixels must be floats in [0, 1]")
        images = np.round(images * 255).astype(np.uint8)
    if images.shape[1:3] != (IMAGE_SIDE, IMAGE_SIDE):
        images = np.stack([to_thumbnail(Image.fromarray(image)) for image in images])
    return np.ascontiguousarray(images)


def _read_hf(name: str, split: str, limit: int | None) -> ImageSet:
    data = load_hf_dataset(name, split)
    features = getattr(data, "features", None) or {}
    columns = list(getattr(data, "column_names", None) or features)
    image_column = next(
        (c for c in columns if type(features.get(c)).__name__ == "Image"),
        next((c for c in columns if c in ("img", "image")), None),
    )
    if image_column is None:
        raise ValueError(f"hf:{name} has no image column (columns: {columns})")
    label_column = next((c for c in ("label", "labels", "fine_label", "coarse_label") if c in columns), None)
    names = getattr(features.get(label_column), "names", None) if label_column else None
    n = len(data) if limit is None else min(limit, len(data))
    pixels, labels = [], []
    for row in range(n):
        record = data[row]
        image = record[image_column]
        pixels.append(to_thumbnail(image) if hasattr(image, "convert") else pixels_from_array(np.asarray(image)[None])[0])
        label = record.get(label_column) if label_column else None
        labels.append(None if label is None else str(names[label] if names else label))
    if not pixels:
        raise ValueError(f"no images found in hf:{name} split {split!r}")
    ids = [f"hf:{name}/{split}#{row}" for row in range(n)]
    return ImageSet(np.stack(pixels), labels, ids, list(ids))
