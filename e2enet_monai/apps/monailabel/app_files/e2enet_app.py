"""
Copied by ``setup_app`` into a MONAI Label ``monaibundle`` app as ``lib/e2enet_app.py``; runs in MONAI Label's own
environment. The app's ``MyApp`` gets :class:`E2ENetRequestChecks` as its first base class.

MONAI Label answers a request for a model it does not serve, or for an image id its datastore does not hold, with
a bare HTTP 500 (its ``MONAILabelException`` is not an HTTP error), so a 3D Slicer user cannot tell a typo from a
crash. These checks answer 404 with what was asked and what exists, before any inference work starts.
"""

import os

from fastapi import HTTPException


def _some(names, limit=10):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


class E2ENetRequestChecks:
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
