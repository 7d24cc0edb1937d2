"""Multi-rank teardown: a rank that finishes early must not abort the torchrun job (gloo, CPU)."""

import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import time, torch, torch.distributed as dist
    from e2enet_monai.bundle import shutdown_distributed

    dist.init_process_group("gloo")
    net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))
    net(torch.randn(2, 4)).sum().backward()
    gathered = [torch.zeros(1) for _ in range(2)]
    dist.all_gather(gathered, torch.ones(1) * dist.get_rank())
    rank = dist.get_rank()
    if rank == 0:
        time.sleep(3)  # rank 0 saving a checkpoint while rank 1 is already done
    shutdown_distributed()
    shutdown_distributed()  # a second call is a no-op
    print(f"rank {rank} done, gathered {[int(g) for g in gathered]}", flush=True)
    """
)


def test_early_rank_waits_for_rank_zero_before_teardown(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(script)]
    for _ in range(3):  # without the barrier this aborts (SIGABRT in rank 1) in most runs
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        assert "rank 0 done, gathered [0, 1]" in proc.stdout and "rank 1 done, gathered [0, 1]" in proc.stdout
        assert "terminate called" not in proc.stderr
