"""Every failure of decoding becomes a ProtocolViolation: nothing escapes as another exception."""

from __future__ import annotations

import pytest

from openenv_ws.protocol import (
    ProtocolViolation,
    decode_batch,
    decode_client,
    decode_server,
    guess_seq,
    json_to_msgpack,
)

DEEP_MSGPACK = b"\x81\xa1t" + b"\x91" * 100_000 + b"\xc0"
DEEP_JSON = '{"t": "step", "seq": 1, "action": ' + "[" * 100_000 + "]" * 100_000 + "}"
HUGE_INT_JSON = '{"t": "step", "seq": ' + "9" * 40 + ', "action": 1}'
FLOAT_SEQ_JSON = '{"t": "step", "seq": 1.2e29, "action": 1}'
BAD_UTF8 = b"\x82\xa1t\xa4step\xa3seq\xa4\xff\xfe\xfd\xfc"


@pytest.mark.parametrize("data", [DEEP_MSGPACK, BAD_UTF8, b"\xc1", b"", b"\x92" * 3])
def test_binary_frames_that_cannot_decode_are_protocol_violations(data):
    for decode in (decode_client, decode_server, decode_batch):
        with pytest.raises(ProtocolViolation):
            decode(data)
    assert guess_seq(data) == 0


@pytest.mark.parametrize("text", [DEEP_JSON, HUGE_INT_JSON, "{", "\ud800"])
def test_json_frames_that_cannot_convert_are_protocol_violations(text):
    with pytest.raises(ProtocolViolation):
        decode_client(json_to_msgpack(text))
    assert guess_seq(text) == 0


def test_an_out_of_range_seq_is_refused_and_not_guessed():
    with pytest.raises(ProtocolViolation, match="Expected `int`"):
        decode_client(json_to_msgpack(FLOAT_SEQ_JSON))
    assert guess_seq(FLOAT_SEQ_JSON) == 0
    assert guess_seq('{"seq": 7}') == 7
    assert guess_seq('{"seq": true}') == 0
