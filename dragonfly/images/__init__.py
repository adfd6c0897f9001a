"""The image store: OS images downloaded once, verified against the vendor's checksum file,
converted where agents cannot take them as they are, kept content-addressed under
``<state dir>/images/`` and served to agents with Range and sendfile.

What the deployment engine calls (``ctx.images`` is an ``ImageStore``, a Service)::

    image = await ctx.images.ensure(ImageSource(
        url="https://cloud.debian.org/.../debian-12-genericcloud-amd64.tar.xz",
        checksum_url="https://cloud.debian.org/.../SHA512SUMS",   # or checksum="sha512:..."
        template="debian-12"))
    # -> Image(digest, format ("raw", "gz", "xz", "zst"), size, raw_size, raw_sha256, ...)
    params = image.stream_params(base_url)  # url, format, size, raw_size, sha256: the
                                            # stream-image and verify action parameters

``ensure`` raises ``ImageFailed`` (HTTP error, timeout, disk full, qemu-img missing: the
message is the reason to show) or ``ImageRefused`` (checksum mismatch: deleted, never served).
Concurrent calls for one URL share one download; its progress is the ``image_download``
document keyed ``url_key(url)`` (state starting, downloading, verifying, converting,
preparing, ready, failed or interrupted; bytes_done, bytes_total, rate, reason), rewritten
about once a second. An image imported offline for the template (``dragonfly image import``)
is used without any network access. ``release(template)`` forgets a template's use, after
which ``remove`` may delete the image.

Modules: ``model`` (ImageSource, Image, errors), ``checksums`` (GNU and BSD checksum files),
``fetch`` (resumable HTTP), ``formats`` (sniffing, decompression, tar, qcow2), ``cache``
(``ImageStore``), ``routes`` (``api``: ``/images/{digest}`` and ``/api/images``), ``cli``
(``dragonfly image``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dragonfly.lazy import lazy_names

if TYPE_CHECKING:
    from dragonfly.images.cache import ImageStore, url_key
    from dragonfly.images.checksums import VendorChecksum
    from dragonfly.images.model import Image, ImageFailed, ImageRefused, ImageSource

__all__ = ["Image", "ImageFailed", "ImageRefused", "ImageSource", "ImageStore",
           "VendorChecksum", "url_key"]

# Loaded on first use: the demo and the event stream need the model's names, not the store
# (downloads, decompression, tar), which only the server runs.
_HOME_OF = {"ImageStore": "cache", "url_key": "cache", "VendorChecksum": "checksums",
            "Image": "model", "ImageFailed": "model", "ImageRefused": "model",
            "ImageSource": "model"}


__getattr__ = lazy_names(__name__, _HOME_OF, globals())
