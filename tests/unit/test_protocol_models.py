"""The protocol's `models` request (install / remove), its `done` reply and the per-job
`heartbeat` limit (ai_enhance_client/protocol.py)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugin" / "ai-enhance"))
from ai_enhance_client import protocol as P  # noqa: E402


def test_models_request_round_trip():
    frames = P.models_request("j1", "install", ["gfpgan-v1.4", "codeformer"], heartbeat=1.5)
    msg = P.decode(frames, expect=P.REQUEST_TYPES)
    assert msg.type is P.MsgType.MODELS
    assert (msg.header["action"], msg.header["ids"], msg.header["heartbeat"]) == \
        ("install", ["gfpgan-v1.4", "codeformer"], 1.5)
    assert "heartbeat" not in P.decode(P.models_request("j2", P.ModelsAction.REMOVE, ["x"])).header


@pytest.mark.parametrize("header, words", [
    ({"action": "upgrade", "ids": ["x"]}, "models.action"),
    ({"action": "install", "ids": []}, "models.ids"),
    ({"action": "install", "ids": ["a b"]}, "not a model id"),
    ({"action": "install", "ids": [f"m{i}" for i in range(P.MAX_MODEL_IDS + 1)]}, "models.ids"),
    ({"action": "install", "ids": ["x"], "heartbeat": 0.1}, "heartbeat"),
])
def test_bad_models_requests_are_one_line_errors_with_the_job_id(header, words):
    frames = P.encode(P.new_header(P.MsgType.MODELS, "jid", **header))
    with pytest.raises(P.ProtocolError) as e:
        P.decode(frames, expect=P.REQUEST_TYPES)
    assert words in str(e.value) and e.value.job_id == "jid"


def test_models_request_carries_no_frames():
    frames = P.models_request("j", "remove", ["x"]) + [b"\0"]
    with pytest.raises(P.ProtocolError, match="no data frames"):
        P.decode(frames)


def test_done_reply_and_unknown_kinds_for_old_clients():
    msg = P.decode(P.done_reply("j", {"installed": ["a"], "bytes": 3}), expect=P.REPLY_TYPES)
    assert msg.type is P.MsgType.DONE and msg.header["info"]["installed"] == ["a"]
    with pytest.raises(P.ProtocolError, match="done.info"):
        P.decode(P.encode(P.new_header(P.MsgType.DONE, "j", info=[1])))
    err = P.decode(P.error_reply("j", P.ErrorKind.DOWNLOAD, "x could not be downloaded", "sha256 mismatch"))
    assert err.header["kind"] == "download"


def test_enhance_heartbeat_limit():
    spec = P.ImageSpec(2, 2, 3, P.DType.U8)
    frames = P.enhance_request("e", op="upscale", image=spec, pixels=b"\0" * 12, heartbeat=1.2)
    assert P.decode(frames).header["heartbeat"] == 1.2
    bad = P.enhance_request("e", op="upscale", image=spec, pixels=b"\0" * 12, heartbeat=0.2)
    with pytest.raises(P.ProtocolError, match="heartbeat"):
        P.decode(bad)
    assert json.loads(bytes(P.enhance_request("e", op="upscale", image=spec, pixels=b"\0" * 12)[0])).get(
        "heartbeat") is None
