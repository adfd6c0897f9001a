"""Images over HTTP: the files agents stream to disk, and the operator's list and removal.

``GET /images/{digest}`` is the agent surface (boot networks, no login): ``FileResponse``
brings Range (206) and sendfile. Removing an image a template still uses is refused with 409
unless ``?force=1``: the template's next deployment would download it again, which on an
air-gapped site is impossible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly.context import ctx_of
from dragonfly.errors import NotFound, Unavailable
from dragonfly.http.router import ApiRouter, Param
from dragonfly.images.model import check_digest

if TYPE_CHECKING:
    from dragonfly.images.cache import ImageStore

api = ApiRouter()

_FORCE = Param("force", help="1: remove even when a template still uses it", type="boolean")


def images_of(request: web.Request) -> ImageStore:
    images = ctx_of(request).images
    if images is None:
        raise Unavailable("this server has no image store")
    return images


@api.get("/images/{digest}", "An image's bytes, as the agent streams them to disk (Range)",
         "images", access="agent", head=True, streaming=True)
async def serve_image(request: web.Request) -> web.StreamResponse:
    images = images_of(request)
    digest = check_digest(request.match_info["digest"])
    path = await images.path_of(digest)
    if path is None:
        raise NotFound(f"no image {digest} on this server")
    if request.method == "GET":
        await images.touch(digest)
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream",
                                           "Cache-Control": "no-transform"})


@api.get("/api/images", "Images in the store, which templates use them, and downloads",
         "images")
async def list_images(request: web.Request) -> dict[str, Any]:
    if ctx_of(request).images is None:  # the demo: nothing is downloaded, so nothing to list
        return {"images": [], "downloads": []}
    images = images_of(request)
    listed = []
    for image in await images.list():
        present = await images.path_of(image.digest) is not None
        listed.append({**image.as_dict(), "url": image.url_path, "in_use": image.in_use,
                       "present": present})
    return {"images": listed, "downloads": await images.downloads()}


@api.delete("/api/images/{digest}", "Remove an image (refused while a template uses it)",
            "images", access="admin", params=(_FORCE,))
async def remove_image(request: web.Request) -> dict[str, Any]:
    force = request.query.get("force", "") in ("1", "true", "yes")
    image = await images_of(request).remove(check_digest(request.match_info["digest"]),
                                            force=force)
    return {"removed": image.digest, "templates": list(image.templates)}


@api.post("/api/images/{digest}/verify", "Hash a stored image again; a corrupt one is removed",
          "images", access="admin")
async def verify_image(request: web.Request) -> dict[str, Any]:
    ok, message = await images_of(request).verify(check_digest(request.match_info["digest"]))
    return {"ok": ok, "message": message}
