"""The tests' warm interpreter (``warm.py``) runs a command as a new interpreter would: same output, same exit."""

import os
import subprocess
import sys
import time

import pytest
import warm

PROBE = '''
import atexit, os, sys, threading, time
import torch
import e2enet_monai
atexit.register(lambda: print("atexit", flush=True))
print(sys.argv[1:], sys.argv[0].endswith("probe.py"), sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print(os.getcwd(), os.environ.get("PROBE_VALUE"), torch.get_num_threads(), __name__)
print(sys.stdout.line_buffering, sys.stdout.write_through, sys.stderr.line_buffering, sys.stderr.write_through)
print("\\r".join(["progress"] * 2), sys.modules["__main__"].__file__ == __file__, "e2enet_monai" in sys.modules)
threading.Thread(target=lambda: (time.sleep(0.3), print("thread joined", flush=True))).start()
if sys.argv[1] == "raise":
    raise ValueError("the message")
sys.exit(int(sys.argv[2]))
'''


@pytest.mark.parametrize("args, env", [(["exit", "0"], {"PYTHONUNBUFFERED": None}),
                                        (["exit", "3"], {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": None}),
                                        (["raise", "x"], {"PROBE_VALUE": "v", "PYTHONUNBUFFERED": "1"})])
def test_a_script_gives_what_a_new_interpreter_gives(tmp_path, args, env):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [sys.executable, str(probe), *args]
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}  # None: not set
    kw = dict(env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    cold, hot = subprocess.run(cmd, **kw), warm.run(cmd, **kw)
    assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert cold.returncode == (1 if args[0] == "raise" else int(args[1]))
    assert cold.stdout.splitlines()[-2:] == ["thread joined", "atexit"]
    if args[0] == "raise":
        assert cold.stderr.splitlines()[-1] == "ValueError: the message"


def test_a_module_gets_its_arguments_exit_status_and_error_as_with_dash_m(tmp_path):
    cmd = [sys.executable, "-m", "e2enet_monai.segment", "-i", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path),
           "--bundle", str(tmp_path)]
    kw = dict(capture_output=True, text=True, timeout=300)
    cold, hot = subprocess.run(cmd, **kw), warm.run(cmd, **kw)
    assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert cold.returncode == 1 and "is not a bundle folder" in cold.stderr.splitlines()[-1]


def test_a_timeout_kills_the_command_and_other_commands_run_as_subprocesses(tmp_path):
    (tmp_path / "sleep.py").write_text("import time\ntime.sleep(60)\n")
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([sys.executable, str(tmp_path / "sleep.py")], timeout=1)
    assert time.monotonic() - start < 30
    assert warm.run(["sh", "-c", "echo $0", "plain"], capture_output=True, text=True).stdout == "plain\n"
