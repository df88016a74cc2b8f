"""Helpers shared by the test folders (imported as `testkit`: a conftest name would be ambiguous
with several conftest.py files): tiny random-initialised networks of the real architectures, and a
real `ai-enhance serve` process on a free loopback port."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# --------------------------------------------------------------------------- tiny models


def make_compact(path: Path, *, scale: int = 4, num_feat: int = 8, num_conv: int = 2,
                 zero_last: bool = False, seed: int = 0, in_ch: int = 3) -> Path:
    """A random SRVGGNetCompact (the realesr-animevideov3 / general-x4v3 architecture) saved in
    upstream's layout ({"params": state_dict}).  With zero_last=True its output is exactly the
    nearest-neighbour upscale of its input (the net adds the nearest-upsampled input)."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    net = Compact(num_in_ch=in_ch, num_out_ch=in_ch, num_feat=num_feat, num_conv=num_conv, upscale=scale)
    sd = net.state_dict()
    if zero_last:
        last = max((k for k in sd if k.startswith("body.") and k.endswith(".weight")),
                   key=lambda k: int(k.split(".")[1]))
        sd[last].zero_()
        sd[last.replace(".weight", ".bias")].zero_()
    torch.save({"params": sd}, path)
    return path


def make_rrdb(path: Path, *, scale: int = 4, num_filters: int = 16, num_blocks: int = 1,
              seed: int = 0) -> Path:
    """A random RRDBNet (the RealESRGAN_x4plus / x2plus architecture) in {"params_ema": ...},
    whose output is NOT saturated: the last conv is rescaled so the output has mean 0.5 and std
    0.2 on noise.  Its receptive field (~18 px per block) exceeds small tiles' context, so seams
    would show."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    shuffle = {1: 4, 2: 2}.get(scale)
    # like upstream x2plus: pixel-unshuffle by 2, then a x4 body
    net = ESRGAN(in_nc=3 * (shuffle or 1) ** 2, out_nc=3, num_filters=num_filters,
                 num_blocks=num_blocks, scale=scale * (shuffle or 1), shuffle_factor=shuffle).eval()
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        y = net(torch.rand(1, 3, 32, 32))
        k = 0.2 / y.std()
        last.weight.mul_(k)
        last.bias.sub_(y.mean()).mul_(k).add_(0.5)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def link(src: Path, dst: Path) -> Path:
    """Put a (cached or shared) model file into a test models folder: a hard link, or a copy
    across file systems; never a symlink (the backend refuses links out of its models folder)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


# --------------------------------------------------------------------------- backend process

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Backend:
    endpoint: str
    models_dir: Path
    log_path: Path
    proc: subprocess.Popen

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def serve_env(models_dir: Path, **extra) -> dict:
    env = dict(os.environ)
    env["AI_ENHANCE_MODELS_DIR"] = str(models_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_serve(models_dir: Path, tmp: Path, *args: str, endpoint: str | None = None,
                wait: float = 60.0, env: dict | None = None) -> Backend:
    """Start a real `ai-enhance serve` (this Python's) and wait until it answers a ping."""
    from ai_enhance_client.client import Client

    endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
    log = tmp / f"serve-{endpoint.rsplit(':', 1)[-1].replace('/', '_')}.log"
    cmd = [sys.executable, "-m", "ai_enhance", "serve", "--endpoint", endpoint,
           "--models-dir", str(models_dir), "--log-file", str(log), *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "serve-stderr.log", "ab"),
                            env=env or serve_env(models_dir), start_new_session=True)
    b = Backend(endpoint, models_dir, log, proc)
    deadline = time.monotonic() + wait
    try:
        wait_serving(log, proc, deadline)
        with Client(endpoint) as c:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {proc.returncode}: "
                                       f"{(tmp / 'serve-stderr.log').read_text()[-2000:]}")
                if c.ping(timeout=0.5) is not None:
                    return b
    except BaseException:
        b.stop()          # never leave a backend behind
        raise
    b.stop()
    raise RuntimeError("serve did not answer within %.0f s" % wait)


def wait_serving(log: Path, proc: subprocess.Popen, deadline: float) -> None:
    """Until the backend's log says it serves (or it exits, or the deadline): pinging a backend
    that is still importing torch leaves half-done CURVE handshakes, and libzmq kept ~36 sockets of
    each such start open in the test process (its 1023-socket limit was reached in full runs)."""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "serving on" in log.read_text("utf-8", "replace"):
                return
        except OSError:
            pass
        time.sleep(0.1)


def curve_dealer(endpoint: str, ctx=None, keys_dir=None):
    """A raw DEALER socket that authenticates like the real client (the session's keys): for
    tests that send hand-made frames to a backend."""
    import zmq
    from ai_enhance_client import keys as K

    ctx = ctx or zmq.Context.instance()
    folder = Path(keys_dir) if keys_dir else K.keys_dir()
    pair = K.client_pair(folder)
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_serverkey = K.server_public(folder)
    s.curve_publickey = pair.public
    s.curve_secretkey = pair.secret
    s.connect(endpoint)
    return s


def have_exe(name: str) -> bool:
    return shutil.which(name) is not None
