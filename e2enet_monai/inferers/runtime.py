"""
Sliding-window inference with the network exported to ONNX and run by ONNX Runtime or OpenVINO (CPU deployment).

The network is exported once per window shape with MONAI's ``convert_to_onnx`` (PyTorch's TorchScript-based
exporter: E2ENet's depth shift and fused concatenation then take their plain slice-pad-concatenate form), after its
weights are loaded, so the bundles keep loading checkpoints into the torch network as they always do. MONAI has no
inferer that swaps the runtime under an inferer; its ``convert_to_onnx`` only exports and verifies.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from monai.inferers import Inferer, SlidingWindowInferer

from e2enet_monai.utils.errors import InputError, exit_on_input_error

__all__ = ["BACKENDS", "RuntimeInferer", "exported_network"]

BACKENDS = ("torch", "onnxruntime", "openvino")
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}
ONNX_OPSET = 17


def _check_packages(backend: str) -> None:
    missing = []
    for name in _PACKAGES[backend]:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise InputError(f"inference_backend {backend!r} needs the package(s) {', '.join(missing)}: pip install "
                          f"{' '.join(missing)} (or e2enet-monai[runtimes]), or use inference_backend 'torch'.")


def _export(network: nn.Module, example: torch.Tensor, path: str) -> None:
    """ONNX file of ``network`` for inputs of exactly ``example``'s shape (static shapes run fastest)."""
    from monai.networks.utils import convert_to_onnx

    with warnings.catch_warnings():  # shape checks read as constants, constant folding of strided slices: expected
        warnings.simplefilter("ignore")
        convert_to_onnx(network, [example], input_names=["image"], output_names=["logits"], opset_version=ONNX_OPSET,
                        filename=path, dynamo=False)


def _session(backend: str, path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """``image -> logits`` (numpy, float32) of the ONNX file at ``path`` in ``backend``, on CPU."""
    if backend == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's arena keeps every run's peak for the session's lifetime (11 GiB after two runs of the paper
        # E2ENet at 96 x 128 x 128); freed buffers go back to malloc instead, which reuse_freed_memory makes cheap
        options.enable_cpu_mem_arena = False
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda image: session.run(None, {"image": image})[0]
    import openvino

    core = openvino.Core()
    # float32 as torch computes (OpenVINO would use bf16 where the CPU has it), the same thread budget
    compiled = core.compile_model(core.read_model(path), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    return lambda image: compiled([image])[0]


def exported_network(network: nn.Module, backend: str, threads: int | None = None) -> Callable[[torch.Tensor],
                                                                                                torch.Tensor]:
    """
    ``network`` (its current weights, in ``eval()``) as a function that runs in ``backend`` on CPU: exported to ONNX
    on the first call with each input shape, then run there; outputs come back as torch tensors on the input's
    device. ``"torch"`` returns ``network`` itself.

    Args:
        network: a segmentation network returning logits ``(B, C, *S)`` for ``(B, in, *S)``.
        backend: one of :data:`BACKENDS`.
        threads: intra-op threads of the runtime (default: ``torch.get_num_threads()``, so each runtime gets the
            same CPU budget as torch).
    """
    if backend not in BACKENDS:
        raise InputError(f"inference_backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "torch":
        return network
    _check_packages(backend)
    sessions: dict[tuple[int, ...], Callable[[np.ndarray], np.ndarray]] = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        if shape not in sessions:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "network.onnx")
                with torch.no_grad():
                    _export(network.eval(), torch.zeros(shape, dtype=torch.float32), path)
                sessions[shape] = _session(backend, path, threads or torch.get_num_threads())
        out = sessions[shape](np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()))
        return torch.from_numpy(out).to(x.device)

    return run


class RuntimeInferer(Inferer):
    """
    Run ``inferer`` (a MONAI ``SlidingWindowInferer``) with the network executed by ``backend``: ``"torch"``
    (unchanged), ``"onnxruntime"`` or ``"openvino"`` (CPU; optional packages, ``pip install e2enet-monai[runtimes]``).
    The network passed at call time (or each fold network of an ensemble around this inferer) is exported once per
    window shape, with the weights it holds then. Outputs equal torch's to float32 round-off (tested to 1e-4).

    Args:
        inferer: the sliding-window inferer to run.
        backend: one of :data:`BACKENDS`.
        threads: intra-op threads of the runtime (default: torch's).

    Top-k patch inference calls the network's building blocks on volumes of every size, so it runs with
    ``"torch"`` only; other backends, unknown names and missing packages are refused here (:class:`InputError`),
    before any work.
    """

    @exit_on_input_error  # a bad choice ends a bundle run with one line, before any work
    def __init__(self, inferer: Inferer, backend: str = "torch", threads: int | None = None) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise InputError(f"inference_backend must be one of {BACKENDS}, got {backend!r}.")
        if backend != "torch":
            if not isinstance(inferer, SlidingWindowInferer):
                raise InputError(f"inference_backend {backend!r} runs sliding-window inference only, got "
                                 f"{type(inferer).__name__} (top-k inference calls the network's parts on volumes of "
                                 f"every size): use inference_backend 'torch' with it.")
            _check_packages(backend)
        self.inferer = inferer
        self.backend = backend
        self.threads = threads
        self._exported: dict[int, tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = {}

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``(B, in, *S)`` -> ``(B, C, *S)`` logits, as the wrapped inferer returns them."""
        if self.backend == "torch":
            return self.inferer(inputs, network, *args, **kwargs)
        if id(network) not in self._exported:  # the network is kept, so its id is not reused by another
            self._exported[id(network)] = (network, exported_network(network, self.backend, self.threads))
        return self.inferer(inputs, self._exported[id(network)][1], *args, **kwargs)
