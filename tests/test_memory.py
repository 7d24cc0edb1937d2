"""``reuse_freed_memory``: repeated forward passes stop costing fresh page faults for their large feature maps."""

import json
import subprocess
import sys

import pytest

# in a fresh process (the setting is process-wide): the page faults of each of 6 forward passes of a small E2ENet
# whose level-0 feature maps (16 x 32 x 128 x 128 floats, 32 MiB) are just above glibc's largest mmap threshold
PROBE = """
import json, resource, sys, torch
from e2enet_monai.networks import E2ENet
from e2enet_monai.utils.memory import reuse_freed_memory
took = reuse_freed_memory() if sys.argv[1] == "on" else False
torch.manual_seed(0)
net = E2ENet(in_channels=1, out_channels=2, channels=(16, 32), strides=(1, 2)).eval()
x = torch.randn(1, 1, 32, 128, 128)
counts = []
with torch.inference_mode():
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"took": took, "faults": counts}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc setting; a no-op elsewhere")
def test_repeated_forward_passes_stop_page_faulting():
    default, reused = _probe("off"), _probe("on")
    feature_map = 16 * 32 * 128 * 128 * 4 // 4096  # pages of one level-0 feature map
    assert reused["took"] is True and default["took"] is False
    # glibc's default: every large feature map is a fresh mmap, faulted in again in every pass
    assert all(f > 4 * feature_map for f in default["faults"]), default
    # with the setting, the heap grows in the first passes, then serves the same memory again (a pass now and then
    # still finds no free chunk large enough where a small allocation split one)
    assert sum(reused["faults"][2:]) < sum(default["faults"][2:]) / 10, (default, reused)


# a freed block of 2.5 GiB at the top of the heap (the paper network's forward pass at the bundles' patch grows the
# heap by about 2.4 GB and frees it): glibc trims the heap when its free top reaches the trim threshold, so that must
# be "never" (-1), not the largest int mallopt takes (2 GiB - 1, which gave the 2.4 GB back and faulted it in again in
# every such pass). With malloc itself (torch's allocator takes its aligned blocks from the same heap), nothing
# allocated in between.
BIG_PROBE = """
import ctypes, json, resource
from e2enet_monai.utils.memory import reuse_freed_memory
took = reuse_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]
counts = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(5 * 2**29)
    ctypes.memset(block, 1, 5 * 2**29)
    libc.free(block)
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"took": took, "faults": counts}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc setting; a no-op elsewhere")
def test_a_freed_block_above_2_gib_stays_for_reuse():
    out = subprocess.run([sys.executable, "-c", BIG_PROBE], check=True, capture_output=True, text=True).stdout
    probe = json.loads(out.splitlines()[-1])
    pages = 5 * 2**29 // 4096
    assert probe["took"] is True
    assert probe["faults"][0] > pages // 2, probe  # the first time: fresh pages from the kernel
    assert max(probe["faults"][1:]) < pages // 100, probe  # then the same memory, every time
