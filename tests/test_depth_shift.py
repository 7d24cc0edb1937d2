import pytest
import torch

from e2enet_monai.networks.blocks import DepthShift, ShiftConvBlock, depth_shift_offsets


def test_offsets_follow_torch_chunk_and_centered_shifts():
    # 12 channels, 5 groups: chunk width ceil(12/5)=3 -> 4 groups of 3, shifts -2..+1
    assert depth_shift_offsets(12, 5) == [(0, 3, -2), (3, 6, -1), (6, 9, 0), (9, 12, 1)]
    assert depth_shift_offsets(48, 5) == [(0, 10, -2), (10, 20, -1), (20, 30, 0), (30, 40, 1), (40, 48, 2)]
    assert depth_shift_offsets(9, 3) == [(0, 3, -1), (3, 6, 0), (6, 9, 1)]


def test_hand_computed_example():
    # 5 channels, 5 groups of one channel with shifts -2, -1, 0, +1, +2 over a depth of 4
    depth = torch.arange(1.0, 5.0)  # [1, 2, 3, 4]
    x = depth.view(1, 1, 4, 1, 1).repeat(1, 5, 1, 2, 2) * torch.arange(1.0, 6.0).view(1, 5, 1, 1, 1)
    y = DepthShift(5, 5)(x)
    expected = torch.tensor(
        [
            [3, 4, 0, 0],  # shift -2: out[d] = in[d + 2]
            [4, 6, 8, 0],  # shift -1 (channel values x2)
            [3, 6, 9, 12],  # no shift
            [0, 4, 8, 12],  # shift +1: out[d] = in[d - 1], zero fill
            [0, 0, 5, 10],  # shift +2
        ],
        dtype=torch.float32,
    )
    assert torch.equal(y[0, :, :, 0, 0], expected)
    assert torch.equal(y[..., 0, 0], y[..., 1, 1])  # only depth moves


def test_shift_larger_than_depth_gives_zeros():
    x = torch.ones(1, 5, 1, 3, 3)
    y = DepthShift(5, 5)(x)
    assert torch.equal(y[0, 2], x[0, 2]) and y[0, [0, 1, 3, 4]].abs().sum() == 0


@pytest.mark.parametrize("channels", [1, 4])
def test_no_shift_below_group_count(channels):
    x = torch.randn(2, channels, 6, 4, 4)
    assert torch.equal(DepthShift(channels, 5)(x), x)


def test_block_modes_and_shapes():
    x = torch.randn(1, 8, 8, 16, 16)
    for mode, kernel in (("shift", (1, 3, 3)), ("plain2d", (1, 3, 3)), ("conv3d", (3, 3, 3))):
        block = ShiftConvBlock(8, 12, stride=(1, 2, 2), conv_mode=mode)
        assert block.conv.conv.kernel_size == kernel
        assert block(x).shape == (1, 12, 8, 8, 8)
    with pytest.raises(ValueError, match="conv_mode"):
        ShiftConvBlock(8, 12, conv_mode="conv2d")


def test_shift_mode_mixes_neighbouring_slices_plain2d_does_not():
    torch.manual_seed(0)
    x = torch.zeros(1, 10, 5, 6, 6)
    x[:, :, 2] = 1.0  # one lit slice
    for mode, lit in (("shift", {0, 1, 2, 3, 4}), ("plain2d", {2})):
        block = ShiftConvBlock(10, 4, conv_mode=mode).eval()
        block.conv.adn.N = torch.nn.Identity()  # keep raw conv responses so zero slices stay comparable
        out = block(x)[0]
        bias_only = block(torch.zeros_like(x))[0]
        changed = {d for d in range(5) if not torch.allclose(out[:, d], bias_only[:, d])}
        assert changed == lit, mode
