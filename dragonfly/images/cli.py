"""``dragonfly image``: import an image offline (air-gapped sites), list and remove images.

Works on the installation's store directly (sqlite in WAL mode: a running server is fine) and
its ``<state dir>/images``; the server serves an imported image as soon as it is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from dragonfly.config import Config, config_path_from_env
from dragonfly.errors import DragonflyError, InvalidInput
from dragonfly.format import binary_bytes
from dragonfly.images import checksums
from dragonfly.images.cache import ImageStore
from dragonfly.images.checksums import VendorChecksum
from dragonfly.store import db_path, open_store

Action = Callable[[ImageStore, argparse.Namespace, TextIO], Awaitable[None]]
FORMATS = ("raw", "gz", "xz", "zst", "qcow2", "tar", "tar.gz", "tar.xz", "tar.zst", "tar.bz2")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, dest="image_state_dir", metavar="DIR",
                        help="the server's state directory (default: from the config)")
    parser.add_argument("--config", type=Path, dest="image_config", metavar="FILE",
                        help="config file (default $DRAGONFLY_CONFIG or "
                             "/etc/dragonfly/dragonfly.toml)")


def add_commands(sub: Any) -> None:
    image = sub.add_parser("image", help="import, list or remove OS images (works offline)",
                           description="The image store: import an image file where the "
                                       "server cannot download it, list images and which "
                                       "templates use them, remove unused ones.")
    image.set_defaults(run=cmd_image)
    image_sub = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    p = image_sub.add_parser(
        "import", help="copy or convert an image file into the store for a template",
        description="Verify FILE (against --checksum or the vendor's --checksum-file), convert "
                    "it when needed (qcow2 with qemu-img, tar archives extracted) and record "
                    "it for the template: its deployments then need no network access.")
    p.add_argument("file", type=Path, metavar="FILE", help="the image file, as the vendor "
                   "publishes it (raw, gz, xz, zst, qcow2 or a tar of one)")
    p.add_argument("--template", required=True, help="the template slug that uses it")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--checksum", metavar="ALG:HEX", help="sha256:HEX or sha512:HEX")
    group.add_argument("--checksum-file", type=Path, metavar="PATH",
                       help="the vendor's SHA256SUMS, SHA512SUMS or CHECKSUM file")
    p.add_argument("--format", choices=FORMATS,
                   help="what FILE is (default: found from its bytes; given, it is checked)")
    _common(p)
    p = image_sub.add_parser("list", help="images, their size, templates and last use")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _common(p)
    p = image_sub.add_parser("remove", help="remove an image (refused while a template uses "
                                            "it, unless --force)")
    p.add_argument("digest", help="the image's sha256 (a unique prefix is enough)")
    p.add_argument("--force", action="store_true")
    _common(p)


def _state_dir(args: argparse.Namespace) -> Path:
    if args.image_state_dir is not None:
        return Path(args.image_state_dir)
    path = args.image_config or getattr(args, "config", None) or config_path_from_env()
    return Config.load(path if path.exists() else None).state_dir


def cmd_image(args: argparse.Namespace, out: TextIO) -> int:
    actions: dict[str, Action] = {"import": _import, "list": _list, "remove": _remove}
    asyncio.run(_run(args, out, actions[args.image_command]))
    return 0


async def _run(args: argparse.Namespace, out: TextIO, action: Action) -> None:
    state_dir = _state_dir(args)
    if args.image_command != "import" and not db_path(state_dir).exists():
        raise DragonflyError(f"no Dragonfly database at {db_path(state_dir)}: pass "
                             "--state-dir or --config of the installation")
    store = open_store(state_dir)
    await store.open()
    try:
        await action(ImageStore(store, state_dir), args, out)
    finally:
        await store.close()


async def _import(images: ImageStore, args: argparse.Namespace, out: TextIO) -> None:
    path: Path = args.file
    vendor: VendorChecksum | None = None
    if args.checksum:
        vendor = checksums.parse_expected(args.checksum)
    elif args.checksum_file:
        try:
            text = await asyncio.to_thread(Path(args.checksum_file).read_text, "utf-8", "replace")
        except OSError as exc:
            raise InvalidInput(f"cannot read {args.checksum_file}: {exc.strerror}") from None
        vendor = checksums.pick(text, path.name, str(args.checksum_file))
    image = await images.import_file(path, template=args.template, checksum=vendor,
                                     format=args.format)
    verified = f"{vendor.algorithm} verified" if vendor else "no checksum given: unverified"
    out.write(f"imported {path.name} as {image.digest} ({image.format}, "
              f"{binary_bytes(image.size)}, disk {binary_bytes(image.raw_size)}; {verified}) "
              f"for template {args.template}\n")


async def _list(images: ImageStore, args: argparse.Namespace, out: TextIO) -> None:
    for image in await images.list():
        if args.json:
            out.write(json.dumps({**image.as_dict(), "in_use": image.in_use}) + "\n")
            continue
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(image.last_used)) \
            if image.last_used else "never"
        out.write(f"{image.digest}\t{image.format}\t{binary_bytes(image.size)}\t"
                  f"templates={','.join(image.templates) or '-'}\tlast used {used}\t"
                  f"{', '.join(image.sources)}\n")


async def _remove(images: ImageStore, args: argparse.Namespace, out: TextIO) -> None:
    prefix = args.digest.strip().lower()
    matches = [i for i in await images.list() if i.digest.startswith(prefix)]
    if len(matches) != 1:
        raise InvalidInput(f"{len(matches) or 'no'} images match {prefix!r}"
                           + (": give more of the digest" if matches else ""))
    image = await images.remove(matches[0].digest, force=args.force)
    out.write(f"removed {image.digest}\n")
