"""Image folders (``PATH/<split>/<class>/<image>``): finding, describing and checking them
before `cbcn_tf.data` reads them with ``tfds.folder_dataset.ImageFolder``."""
import os

from cbcn_tf.errors import DataError

# The extensions tfds.folder_dataset.ImageFolder reads; other files are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def folder_root(name, data_dir):
    """The folder of dataset ``name`` ("folder:PATH", or "image_folder" with ``data_dir``), or
    None for other names."""
    if name.startswith("folder:"):
        if data_dir is not None:
            raise DataError(
                f"Give the folder once: {name!r} or 'image_folder' with data_dir, not both."
            )
        return os.path.abspath(os.path.expanduser(name[len("folder:"):]))
    if name == "image_folder":
        if data_dir is None:
            raise DataError(
                "'image_folder' needs data_dir=PATH (layout PATH/<split>/<class>/<image>)."
            )
        return os.path.abspath(os.path.expanduser(data_dir))
    return None


def _subdirs(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir())


def _images_in(path):
    return sorted(
        os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)
    )


def layout(root):
    """``(splits, classes, (height, width, channels))`` of the folder ``root``; the shape is
    the first image's (every image must have it, see `validate_split`)."""
    if not os.path.isdir(root):
        raise DataError(
            f"Image folder {root} does not exist; "
            f"expected the layout {root}/<split>/<class>/<image>."
        )
    splits = _subdirs(root)
    classes = sorted({c for s in splits for c in _subdirs(os.path.join(root, s))})
    if not classes:
        raise DataError(
            f"No <split>/<class> folders in {root}; expected {root}/<split>/<class>/<image>."
        )
    if len(classes) < 2:
        raise DataError(
            f"{root} holds one class ({classes[0]!r}); a classifier needs at least two class "
            f"folders in {root}/<split>/<class>. Add the other classes' folders.")
    width, height, mode = _check_image(_reference_image(root))
    channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    return splits, classes, (height, width, channels)


def _reference_image(root):
    """The first image of "train" (else of the first split): every image must have its size."""
    for split in sorted(_subdirs(root), key=lambda s: s != "train"):
        for cls in _subdirs(os.path.join(root, split)):
            images = _images_in(os.path.join(root, split, cls))
            if images:
                return images[0]
    raise DataError(f"No {'/'.join(IMAGE_EXTENSIONS)} images under {root}.")


def _check_image(path):
    """Parse and verify the header (no pixel decoding); return (width, height, mode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
            image.verify()
        if path.lower().endswith((".jpg", ".jpeg")):
            # A truncated JPEG passes the header checks but lacks its end-of-image marker.
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 32))
                if b"\xff\xd9" not in f.read():
                    raise OSError("no JPEG end-of-image marker (truncated file?)")
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(f"Unreadable image {path}: {exc}. Delete or re-export it.") from exc
    return size[0], size[1], mode


def validate_split(root, split):
    """Check every image of ``root/split`` (headers, JPEG end markers, one size for all)."""
    split_dir = os.path.join(root, split)
    classes = _subdirs(split_dir)
    if not classes:
        raise DataError(
            f"Split folder {split_dir} has no class folders; expected {split_dir}/<class>/<image>."
        )
    reference = _reference_image(root)
    reference_size = _check_image(reference)[:2]
    for cls in classes:
        images = _images_in(os.path.join(split_dir, cls))
        if not images:
            raise DataError(
                f"Class folder {os.path.join(split_dir, cls)} has no {'/'.join(IMAGE_EXTENSIONS)} "
                "images; add images or remove the folder."
            )
        for path in images:
            size = _check_image(path)[:2]
            if size != reference_size:
                raise DataError(
                    f"Images differ in size: {reference} is {reference_size[0]}x"
                    f"{reference_size[1]} but {path} is {size[0]}x{size[1]}; "
                    "resize them to one size."
                )
