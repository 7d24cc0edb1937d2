"""
E2ENet's fast execution (the transposed convolution as a 1x1x1 convolution and pixel shuffle, the depth shift and the
fusion concatenation as one copy, inference max-pooling as maxima of strided views, inference (1, 3, 3) convolutions
as 2D convolutions over depth slices, narrow convolutions trained through channels-last maps) against a reference
written here with plain PyTorch ops: ``F.conv_transpose3d``, ``torch.cat``, ``F.max_pool3d``, ``F.conv3d`` and a
slice-and-pad depth shift. Same weights, outputs and gradients equal to float64 round-off; the float32-only NNPACK
path to float32 round-off of its FFT and Winograd forms.
"""

import os
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.blocks import Convolution

from e2enet_monai.networks import E2ENet
from e2enet_monai.networks.blocks import (
    FOLD_MIN_CHANNELS,
    DepthShift,
    FastInstanceNorm3d,
    FusionNode,
    NarrowConv3d,
    ShiftConvBlock,
    StrideMaxPool3d,
    StrideTransposeConv3d,
    nnpack_conv,
)
from e2enet_monai.networks.utils import set_nnpack


def reference_shift(x: torch.Tensor, shift: DepthShift) -> torch.Tensor:
    """out[:, g, d] = x[:, g, d - s_g], zero filled, one group at a time."""
    out = torch.zeros_like(x)
    depth = x.shape[2]
    for start, stop, s in zip(shift.starts, shift.stops, shift.shifts):
        for d in range(depth):
            if 0 <= d - s < depth:
                out[:, start:stop, d] = x[:, start:stop, d - s]
    return out if shift.shifts else x


def reference_block(block: ShiftConvBlock, x: torch.Tensor) -> torch.Tensor:
    conv = block.conv.conv
    y = F.conv3d(reference_shift(x, block.shift), conv.weight, conv.bias, conv.stride, conv.padding)
    norm = block.conv.adn.N
    y = F.instance_norm(y, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    return F.leaky_relu(y, 0.01)


def reference_node(node: FusionNode, same, coarse, fine):
    up = F.conv_transpose3d(coarse, node.up.weight, stride=node.up.stride)
    inputs = [same, up] + ([F.max_pool3d(fine, node.down.kernel_size, node.down.stride)] if node.down else [])
    x = torch.cat(inputs, dim=1)
    for block in node.fuse:
        x = reference_block(block, x)
    return x


def reference_e2enet(net: E2ENet, x: torch.Tensor) -> list[torch.Tensor]:
    prev = []
    for level in net.encoder:
        for block in level:
            x = reference_block(block, x)
        prev.append(x)
    diagonal = []
    for stage in net.mesh:
        cur = [reference_node(node, prev[lev], prev[lev + 1], prev[lev - 1] if lev > 0 else None)
               for lev, node in enumerate(stage)]
        diagonal.append(cur[-1])
        prev = cur
    return [F.conv3d(diagonal[-1 - i], head.weight) for i, head in enumerate(net.heads)]


def _weighted_sum(outputs: list[torch.Tensor]) -> torch.Tensor:
    return sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outputs)


CONFIGS = [
    ({"channels": (8, 16, 32, 64), "strides": (1, 2, 2, 2)}, (2, 1, 16, 24, 24)),
    ({"channels": (7, 13, 21), "strides": (1, (1, 2, 2), 2), "in_channels": 2}, (1, 2, 8, 16, 12)),  # odd, anisotropic
    ({"channels": (6, 11, 9), "strides": (1, (2, 1, 2), (1, 2, 1)), "shift_groups": 3}, (1, 1, 4, 8, 6)),
    ({"channels": (8, 16, 32), "strides": (1, 2, 2), "conv_mode": "plain2d"}, (1, 1, 8, 8, 8)),
    ({"channels": (8, 16, 32), "strides": (1, 2, 2), "conv_mode": "conv3d"}, (1, 1, 8, 8, 8)),
]


@pytest.mark.parametrize("kwargs, shape", CONFIGS)
def test_outputs_and_gradients_equal_the_reference(kwargs, shape):
    torch.manual_seed(0)
    net = E2ENet(out_channels=3, **{"in_channels": 1, **kwargs}).double().train()
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    fast, ref = net(x), reference_e2enet(net, x)
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    params = [x, *net.parameters()]
    grads_fast = torch.autograd.grad(_weighted_sum(fast), params, allow_unused=True, materialize_grads=True)
    grads_ref = torch.autograd.grad(_weighted_sum(ref), params, allow_unused=True, materialize_grads=True)
    scale = max(g.abs().max() for g in grads_ref)
    for (name, _), a, b in zip([("input", x), *net.named_parameters()], grads_fast, grads_ref):
        assert (a - b).abs().max() <= 1e-10 * scale, name
    net.eval()  # inference: no gradient, so the pooling takes its fast form, and the depth folds where it can
    blocks = [m for m in net.modules() if isinstance(m, ShiftConvBlock)]
    with torch.no_grad():
        expected = reference_e2enet(net, x)[0]
        for fold in (False, True):
            for block in blocks:
                block.fold_depth = fold
            assert torch.allclose(net(x), expected, rtol=1e-10, atol=1e-12), fold


def test_inference_folds_the_depth_of_wide_blocks_into_the_batch_with_the_same_outputs(monkeypatch):
    torch.manual_seed(0)
    wide, narrow = ShiftConvBlock(45, FOLD_MIN_CHANNELS), ShiftConvBlock(45, FOLD_MIN_CHANNELS - 1)
    strided = ShiftConvBlock(45, 48, stride=(1, 2, 2))  # folds: the depth keeps every slice
    assert wide.fold_depth and not narrow.fold_depth and strided.foldable
    assert not ShiftConvBlock(45, 48, stride=2).foldable and not ShiftConvBlock(45, 48, conv_mode="conv3d").foldable
    layouts = []
    fold = NarrowConv3d._depth_folded
    monkeypatch.setattr(NarrowConv3d, "_depth_folded", lambda self, x: layouts.append(x.stride()) or fold(self, x))
    xs = [torch.randn(2, c, 5, 8, 6, dtype=torch.double) for c in (20, 25)]
    for block in (wide.double(), narrow.double(), strided.double()):
        block.eval()
        expected = reference_block(block, torch.cat(xs, 1))
        with torch.no_grad():
            assert torch.allclose(block.concat(xs), expected, rtol=1e-10, atol=1e-12)
        assert torch.allclose(block.concat(xs), expected, rtol=1e-10, atol=1e-12)  # with gradients: 3D
    # only the two wide blocks' no-gradient calls folded, each over a depth-major (B, D, C, H, W) copy
    assert layouts == [(5 * 45 * 48, 48, 45 * 48, 6, 1)] * 2
    keep = [0, 3, 4, 9, 20, 21, 30, 44]  # a channel-compacted block folds over the kept channels only
    wide.compact(keep)
    with torch.no_grad():
        out = wide(torch.cat(xs, 1))
    assert layouts[-1] == (5 * 8 * 48, 48, 8 * 48, 6, 1)
    wide.fold_depth = False
    with torch.no_grad():
        assert torch.allclose(out, wide(torch.cat(xs, 1)), rtol=1e-10, atol=1e-12)


def test_convolution_folds_a_depth_major_input_without_gradient_into_2d_convolutions(monkeypatch):
    torch.manual_seed(0)
    folded = []
    fold = NarrowConv3d._depth_folded
    monkeypatch.setattr(NarrowConv3d, "_depth_folded", lambda self, x: folded.append(1) or fold(self, x))
    x = torch.randn(2, 4, 7, 5, 9, dtype=torch.double).transpose(1, 2)  # (B, C, D, H, W), stored depth-major
    for kernel, stride, padding, folds in (((1, 3, 3), 1, (0, 1, 1), True), ((1, 3, 1), (1, 2, 1), (0, 1, 0), True),
                                           ((1, 3, 3), (2, 1, 1), (0, 1, 1), False), (3, 1, 1, False)):
        conv = NarrowConv3d(7, 5, kernel, stride, padding).double()
        expected = F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding)
        folded.clear()
        with torch.no_grad():
            out = conv(x)
            assert torch.allclose(out, expected, rtol=1e-12, atol=1e-14) and out.is_contiguous()
            conv(x.contiguous())  # channels-first: nn.Conv3d
        assert torch.allclose(conv(x), expected, rtol=1e-12, atol=1e-14)  # with a gradient: nn.Conv3d
        assert folded == ([1] if folds else []), (kernel, stride)


@pytest.fixture
def one_thread():
    """
    PyTorch's thread count set to 1 for the test and restored after it; NNPACK's first call in this process (which
    makes its 1-thread pool) made before the test, so that the test counts only its own calls.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if torch.backends.nnpack.is_available():
        with torch.no_grad():
            nnpack_conv.conv2d(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), None, (1, 1), (1, 1),
                               torch.empty(1, 1, 4, 4), "on")
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this PyTorch build has no NNPACK")
def test_float32_inference_takes_nnpack_for_wide_inputs_on_large_slices_with_the_reference_outputs(monkeypatch,
                                                                                                  one_thread):
    torch.manual_seed(0)
    net = E2ENet(in_channels=1, out_channels=4, channels=(32, 48, 64, 96), strides=(1, 2, 2, 2)).eval()
    x = torch.randn(1, 1, 16, 64, 64)
    expected = reference_e2enet(net.double(), x.double())[0]
    net.float()
    calls = []
    nnpack = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution",
                        lambda x, *args: calls.append(tuple(x.shape)) or nnpack(x, *args))
    errors = {}
    for mode in ("auto", "on", "off"):
        set_nnpack(net, mode)
        calls.clear()
        with torch.no_grad():
            out = net(x)
            # a MetaTensor, as MONAI's transforms and top-k inference hand over, takes the same path
            assert torch.equal(net(MetaTensor(x)).as_tensor(), out)
        errors[mode] = ((out.double() - expected).abs().max() / expected.abs().max()).item()
        if mode == "auto":  # folded convolutions with at least 32 inputs on slices of at least 12 x 12 (16 x 16 here)
            assert sorted(set(calls)) == [(4, 64, 16, 16), (4, 176, 16, 16), (8, 48, 32, 32), (8, 128, 32, 32)]
        elif mode == "on":  # every stride-1 folded convolution, the 8 x 8 slices of the lowest level too
            assert {c[2:] for c in calls} == {(32, 32), (16, 16), (8, 8)}
        else:
            assert calls == []
    # float32 round-off: about 1e-5 of the logits' scale through NNPACK, about 1e-6 through oneDNN alone
    assert errors["auto"] < 1e-4 and errors["on"] < 1e-4 and errors["off"] < 1e-5
    with torch.enable_grad():  # a gradient to compute: no fold, no NNPACK
        calls.clear()
        net.train()(x)
    assert calls == []


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this PyTorch build has no NNPACK")
def test_nnpack_in_chunks_of_slices_and_in_parallel_threads_fills_the_same_output(monkeypatch, one_thread):
    torch.manual_seed(0)
    x = torch.randn(7, 32, 20, 24)
    w, b = nn.Parameter(torch.randn(5, 32, 3, 3)), nn.Parameter(torch.randn(5))  # a network's: they need gradients
    with torch.no_grad():
        expected = F.conv2d(x.double(), w.double(), b.double(), 1, (1, 0))
    calls = []
    nnpack = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution",
                        lambda x, *args: calls.append((threading.current_thread().name.split("_")[0], x.shape[0]))
                        or nnpack(x, *args))
    main, helper = threading.current_thread().name, "e2enet-nnpack"
    outs = []
    # 1 thread: calls of the chunk in this thread; 2 threads: slices 0-3 here and 4-6 in a helper thread at once
    for threads, chunk, sizes in ((1, 3, [(main, 3), (main, 3), (main, 1)]), (1, 7, [(main, 7)]),
                                  (2, 3, [(main, 3), (main, 1), (helper, 3)]), (2, 8, [(main, 4), (helper, 3)])):
        torch.set_num_threads(threads)
        monkeypatch.setattr(nnpack_conv, "nnpack_chunk", lambda x, chunk=chunk: chunk)
        calls.clear()
        out = torch.full((5, 7, 20, 22), float("nan")).transpose(0, 1)  # a view, as NarrowConv3d writes into
        # the helper thread takes the caller's mode (else writing into an inference tensor or a no-grad view fails)
        with torch.inference_mode() if chunk == 8 else torch.no_grad():
            assert nnpack_conv.conv2d(x, w, b, (1, 1), (1, 0), out, "on") is out
        assert sorted(calls) == sorted(sizes)
        assert ((out.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5
        outs.append(out)
    # NNPACK computes each slice alone: neither the chunks nor the threads change a bit
    assert all(torch.equal(out, outs[0]) for out in outs)


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this PyTorch build has no NNPACK")
def test_a_forked_child_makes_its_own_nnpack_helper_threads(one_thread):
    torch.set_num_threads(2)
    x, w = torch.randn(4, 32, 8, 8), torch.randn(3, 32, 3, 3)
    with torch.no_grad():
        nnpack_conv.conv2d(x, w, None, (1, 1), (1, 1), torch.empty(4, 3, 8, 8), "on")
    assert list(nnpack_conv._workers) == [1]
    pid = os.fork()
    if pid == 0:  # the parent's helper thread does not exist here: its executor is forgotten
        os._exit(0 if not nnpack_conv._workers else 1)
    assert os.waitpid(pid, 0)[1] == 0 and list(nnpack_conv._workers) == [1]


def test_nnpack_rule_names_each_condition(monkeypatch, one_thread):
    monkeypatch.setattr(torch.backends.nnpack, "is_available", lambda: True)
    w = torch.zeros(8, 32, 3, 3)

    def use(c=32, h=12, w_=12, stride=(1, 1), mode="auto", dtype=torch.float32):
        return nnpack_conv.use_nnpack(torch.zeros(2, c, h, w_, dtype=dtype), w.to(dtype)[:, :c], stride, mode)

    assert use() and use(h=6, w_=24)
    assert not use(c=31) and not use(h=11) and not use(stride=(2, 2)) and not use(dtype=torch.float64)
    assert use(c=31, h=4, mode="on") and not use(mode="off")
    torch.set_num_threads(nnpack_conv.NNPACK_MAX_THREADS)
    assert use()
    torch.set_num_threads(nnpack_conv.NNPACK_MAX_THREADS + 1)
    assert not use() and use(mode="on")  # more threads than measured: only when asked for
    # calls of at least 8 slices and 64k pixels: 8 of 128 x 128 or 96 x 96, 16 of 64 x 64, 113 of 24 x 24
    chunk = nnpack_conv.nnpack_chunk
    assert nnpack_conv.NNPACK_CHUNK_SLICES == 8 and nnpack_conv.NNPACK_CHUNK_PIXELS == 65536
    assert chunk(torch.zeros(20, 32, 128, 128)) == chunk(torch.zeros(20, 32, 96, 96)) == 8
    assert chunk(torch.zeros(20, 32, 64, 64)) == 16 and chunk(torch.zeros(20, 32, 24, 24)) == 113
    with pytest.raises(ValueError, match=r"nnpack must be one of \('auto', 'on', 'off'\), got 'yes'"):
        use(mode="yes")
    with pytest.raises(ValueError, match=r"nnpack must be one of"):
        NarrowConv3d(4, 4, (1, 3, 3), nnpack="yes")
    with pytest.raises(ValueError, match=r"nnpack must be one of"):
        set_nnpack(E2ENet(in_channels=1, out_channels=2, channels=(4, 8), strides=(1, 2)), "yes")


def test_stride_max_pool_equals_max_pool3d_and_keeps_its_gradient_in_training():
    torch.manual_seed(0)
    for stride, shape in (((2, 2, 2), (2, 3, 4, 6, 8)), ((1, 2, 2), (1, 2, 3, 4, 6)), ((2, 1, 3), (1, 2, 4, 5, 9))):
        pool = StrideMaxPool3d(stride)
        x = torch.randn(*shape, dtype=torch.double)
        x[0, 0, :2, :2, :2] = 1.5  # a tied window
        x[-1, -1, -1, -1, -1] = float("nan")  # propagates as in max_pool3d
        with torch.no_grad():
            out, expected = pool(x), F.max_pool3d(x, stride, stride)
        assert out.shape == expected.shape and torch.allclose(out, expected, equal_nan=True, rtol=0, atol=0)
        x.requires_grad_()  # training: max_pool3d itself, so tied maxima route their gradient as before
        g = torch.randn_like(expected)
        assert torch.equal(torch.autograd.grad((pool(x) * g).nansum(), x)[0],
                           torch.autograd.grad((F.max_pool3d(x, stride, stride) * g).nansum(), x)[0])
    odd = torch.randn(1, 2, 5, 4, 4)  # not a multiple of the stride: max_pool3d's floor
    with torch.no_grad():
        assert torch.equal(StrideMaxPool3d(2)(odd), F.max_pool3d(odd, 2, 2))


def test_stride_transpose_equals_conv_transpose_with_bias_and_anisotropic_strides():
    torch.manual_seed(0)
    for stride in ((2, 2, 2), (1, 2, 2), (2, 1, 3)):
        up = StrideTransposeConv3d(5, 3, stride, bias=True).double()
        assert isinstance(up, torch.nn.ConvTranspose3d) and set(up.state_dict()) == {"weight", "bias"}
        x = torch.randn(2, 5, 3, 4, 2, dtype=torch.double, requires_grad=True)
        expected = F.conv_transpose3d(x, up.weight, up.bias, stride=stride)
        assert torch.allclose(up(x), expected, rtol=1e-12, atol=1e-14)
        assert torch.autograd.gradcheck(up, (x,))


def test_fused_concat_equals_cat_then_shift_and_its_gradient_is_exact():
    torch.manual_seed(0)
    shift = DepthShift(12, 5)  # groups of 3 channels cut across the inputs' 5 | 4 | 3 boundaries
    xs = [torch.randn(2, c, 4, 3, 3, dtype=torch.double, requires_grad=True) for c in (5, 4, 3)]
    assert torch.equal(shift.concat(xs), reference_shift(torch.cat(xs, 1), shift))
    assert torch.autograd.gradcheck(lambda *t: shift.concat(list(t)), xs)
    with pytest.raises(ValueError, match=r"DepthShift\(12\) got 11 channels \(\[5, 4, 2\] concatenated\)"):
        shift.concat([xs[0], xs[1], xs[2][:, :2]])


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the input checks read shapes as Python ints
def test_torchscript_script_and_trace_take_the_slice_form_with_the_same_outputs():
    torch.manual_seed(0)
    net = E2ENet(in_channels=1, out_channels=3, channels=(7, 13, 21), strides=(1, (1, 2, 2), 2)).eval()
    x = torch.randn(1, 1, 8, 16, 12)
    with torch.no_grad():
        traced = torch.jit.trace(net, x)  # what torch.onnx.export records
        assert "ShiftConcat" not in str(traced.inlined_graph)
        for compiled in (torch.jit.script(net), traced):
            assert torch.allclose(compiled(x), net(x), rtol=1e-5, atol=1e-6)
    scripted = torch.jit.script(net.train())  # training: the narrow convolutions' channels-last path compiles too
    for a, b in zip(scripted(x), net(x)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def _copies(out: torch.Tensor) -> bool:
    """Whether ``out``'s autograd graph holds a copy (the channels-last path's)."""
    todo, seen = [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == "CloneBackward0":
            return True
        todo += [n for n, _ in node.next_functions]
    return False


@pytest.mark.parametrize("cin, cout, kernel, stride, padding", [
    (16, 8, (1, 3, 3), 1, (0, 1, 1)),  # the CPU demo network's full-resolution fusion convolution
    (7, 5, (1, 3, 3), (1, 2, 2), (0, 1, 1)),  # odd channel counts, anisotropic stride
    (3, 13, 3, (2, 1, 2), 1),
])
def test_narrow_convolution_trains_through_channels_last_with_the_gradients_of_conv3d(cin, cout, kernel, stride,
                                                                                    padding):
    torch.manual_seed(0)
    conv = NarrowConv3d(cin, cout, kernel, stride, padding).double().train()
    assert set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, cin, 5, 9, 8, dtype=torch.double, requires_grad=True)
    out = conv(x)
    assert _copies(out) and out.is_contiguous()  # through a channels-last copy, back to channels-first
    expected = F.conv3d(x, conv.weight, conv.bias, stride, padding)
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-13)
    w = torch.randn_like(out)
    params = [x, conv.weight, conv.bias]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((expected * w).sum(), params)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    # nn.Conv3d itself: switched off, in inference, without gradients
    conv.channels_last_training = False
    assert not _copies(conv(x))
    conv.channels_last_training = True
    assert not _copies(conv.eval()(x))
    with torch.no_grad():
        assert torch.equal(conv.train()(x), F.conv3d(x, conv.weight, conv.bias, stride, padding))
    conv.requires_grad_(False)  # frozen, on an input that needs no gradient either
    assert not _copies(conv(x.detach())) and _copies(conv(x))


def test_narrow_convolution_in_float32_takes_onednn_channels_last_with_the_same_gradients():
    torch.manual_seed(0)
    conv = NarrowConv3d(16, 8, (1, 3, 3), padding=(0, 1, 1)).train()
    x = torch.randn(2, 16, 6, 20, 20, requires_grad=True)
    out, expected = conv(x), F.conv3d(x, conv.weight, conv.bias, padding=(0, 1, 1))
    assert _copies(out) and torch.allclose(out, expected, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(out)
    params = [x, conv.weight, conv.bias]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((expected * w).sum(), params)):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_wide_convolution_is_conv3d():
    conv = NarrowConv3d(8, 16, (1, 3, 3), padding=(0, 1, 1)).train()
    assert not _copies(conv(torch.randn(1, 8, 2, 4, 4)))


def test_shift_conv_block_starts_from_monai_convolution_weights_and_compacts_to_a_narrow_convolution():
    """The block draws the same initial weights as the MONAI ``Convolution`` it is built from (so a seeded network
    initialises as before), and compaction keeps the narrow convolution and its switch."""
    torch.manual_seed(0)
    block = ShiftConvBlock(16, 8)
    after_block = torch.rand(3)
    torch.manual_seed(0)
    plain = Convolution(3, 16, 8, kernel_size=(1, 3, 3), adn_ordering="NA", act=("leakyrelu", {"inplace": True}),
                        norm=("instance", {"affine": True}), bias=True)
    assert isinstance(block.conv.conv, NarrowConv3d)
    assert torch.equal(block.conv.conv.weight, plain.conv.weight) and torch.equal(block.conv.conv.bias, plain.conv.bias)
    assert torch.equal(after_block, torch.rand(3))  # and nothing more is drawn
    block.conv.conv.channels_last_training = False
    block.compact([1, 4, 5])
    assert isinstance(block.conv.conv, NarrowConv3d) and block.conv.conv.in_channels == 3
    assert not block.conv.conv.channels_last_training


def test_fast_instance_norm_is_instance_norm_with_the_same_parameters():
    torch.manual_seed(0)
    reference = torch.nn.InstanceNorm3d(6, affine=True).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2.0)
        reference.bias.uniform_(-1.0, 1.0)
    fast = FastInstanceNorm3d(6).double()
    assert isinstance(fast, torch.nn.InstanceNorm3d)
    fast.load_state_dict(reference.state_dict())  # same keys, no buffers: checkpoints load either way
    x = (torch.randn(3, 6, 4, 5, 7, dtype=torch.double) * 3 + 2).requires_grad_()
    a, b = fast(x), reference(x)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(a)
    ga = torch.autograd.grad((a * w).sum(), [x, fast.weight, fast.bias])
    gb = torch.autograd.grad((b * w).sum(), [x, reference.weight, reference.bias])
    for u, v in zip(ga, gb):
        assert torch.allclose(u, v, rtol=1e-10, atol=1e-12)
    expected = r"FastInstanceNorm3d\(6\) expects \(B, 6, D, H, W\), got shape \[3, 5, 4, 5, 7\]"
    with pytest.raises(ValueError, match=expected):
        fast(x[:, :5])


def test_every_e2enet_block_normalises_with_the_fast_instance_norm():
    net = E2ENet(in_channels=1, out_channels=3, channels=(8, 16, 32), strides=(1, 2, 2))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    blocks = [m for m in net.modules() if isinstance(m, ShiftConvBlock)]
    assert len(norms) == len(blocks) and all(isinstance(m, FastInstanceNorm3d) for m in norms)
    assert all(k.endswith(("conv.adn.N.weight", "conv.adn.N.bias")) for k in net.state_dict() if ".adn.N." in k)
