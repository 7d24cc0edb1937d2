"""
Copied by ``setup_app`` into a MONAI Label ``monaibundle`` app as ``lib/e2enet_app.py``; runs in MONAI Label's own
environment. The app's ``MyApp`` gets :class:`E2ENetRequestChecks` as its first base class.

MONAI Label answers a request for a model it does not serve, or for an image id its datastore does not hold, with
a bare HTTP 500 (its ``MONAILabelException`` is not an HTTP error), so a 3D Slicer user cannot tell a typo from a
crash. These checks answer 404 with what was asked and what exists, before any inference work starts.

A training request whose validation split leaves no labelled case for validation would run and report success but
write no weights (our bundles save ``models/model.pt`` on a validation); it is refused with 422 and what to send.
MONAI Label runs a synchronous ``/train`` (``run_sync=true``) in the server, so that request gets the answer; an
asynchronous one runs in a background process, whose task status and log carry the same message.

MONAI Label's ``/infer`` and ``/train`` endpoints are ``async`` functions that run the whole inference (or a
synchronous training) on the server's event loop, so the server answers nothing else meanwhile: not ``/info/``,
not the datastore, not a label save. :func:`serve_off_the_event_loop` puts in front of them the same endpoints run
in a worker thread, one such request at a time, so the event loop keeps answering the others.
"""

import asyncio
import functools
import logging
import os
import sys
import threading

from fastapi import HTTPException
from monai.data import partition_dataset

_ONE_AT_A_TIME = threading.Lock()  # the served networks are not shared between concurrent requests


def _some(names, limit=10):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def _in_worker_thread(endpoint):
    """``endpoint`` (an ``async def`` whose body blocks and never awaits) run to completion in a thread pool."""
    from starlette.concurrency import run_in_threadpool

    def run(*args, **kwargs):
        with _ONE_AT_A_TIME:
            return asyncio.run(endpoint(*args, **kwargs))

    @functools.wraps(endpoint)  # the same signature: FastAPI resolves the same parameters and dependencies
    async def threaded(*args, **kwargs):
        return await run_in_threadpool(run, *args, **kwargs)

    return threaded


def serve_off_the_event_loop(app) -> list:
    """
    Put in front of the FastAPI ``app``'s routes a ``POST /infer/{model}`` and a ``POST /train/{model}`` that run
    MONAI Label's own endpoints in a worker thread (same parameters, dependencies and replies); return their paths.
    Routes added to the app come before the routers MONAI Label included, so they answer those requests.
    """
    from monailabel.config import settings
    from monailabel.endpoints import infer, train

    if any(getattr(getattr(r, "endpoint", None), "_e2enet_threaded", False) for r in app.router.routes):
        return []  # already done (the app is made again after /reload)
    paths = []
    for path, endpoint in (("/infer/{model}", infer.api_run_inference), ("/train/{model}", train.api_run_model)):
        threaded = _in_worker_thread(endpoint)
        threaded._e2enet_threaded = True
        path = settings.MONAI_LABEL_API_STR + path
        app.router.add_api_route(path, threaded, methods=["POST"], include_in_schema=False)
        app.router.routes.insert(0, app.router.routes.pop())
        paths.append(path)
    return paths


class E2ENetRequestChecks:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        server = sys.modules.get("monailabel.app")  # the running server (absent when the app runs as a CLI task)
        if server is not None and hasattr(server, "app"):
            paths = serve_off_the_event_loop(server.app)
            if paths:
                logging.getLogger(__name__).info(f"e2enet: {', '.join(paths)} run in a worker thread, one at a time, "
                                                 f"so the server keeps answering other requests meanwhile")

    def infer(self, request, datastore=None):
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; this server serves: "
                                                        f"{_some(self._infers) or 'no model'}.")
        image = request.get("image")
        if isinstance(image, str) and not os.path.exists(image):
            ids = (datastore if datastore else self.datastore()).list_images()
            if image not in ids:
                raise HTTPException(status_code=404, detail=f"image {image!r} is not in the datastore "
                                                            f"(images: {_some(ids) or 'none'}).")
        return super().infer(request, datastore)

    def train(self, request):
        model = request.get("model")
        if model not in self._trainers:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; this server trains: "
                                                        f"{_some(self._trainers) or 'no model'}.")
        labelled = len(self.datastore().datalist())
        split = float(request.get("val_split", 0.2))  # MONAI Label's default, split as its bundle trainer does
        held_out = (len(partition_dataset(list(range(labelled)), ratios=[1 - split, split])[1])
                    if split > 0 and labelled > 0 else 0)
        if labelled == 0 or held_out == 0 or held_out == labelled:
            raise HTTPException(status_code=422, detail=(
                f"training {model!r} needs at least one labelled image to train on and one to validate on (the best "
                f"validation writes models/model.pt); the datastore has {labelled} labelled image(s) and val_split "
                f"{split} holds out {held_out}. Save final labels for 2 or more images and send a val_split that "
                f"holds one out, e.g. {{\"val_split\": 0.5}}."))
        return super().train(request)
