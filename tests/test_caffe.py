import numpy as np

from convert.caffe import parse_prototxt, read_caffemodel


def test_prototxt_nested_blocks_repeats_comments_and_strings():
    text = '''name: "net"  # a comment
    input_shape { dim: 1 dim: 3 }
    layer { name: "a" type: "ReLU" bottom: "x" top: "x" param { lr_mult: 0 } }
    layer { name: "b" flag: true value: 2.5 }'''
    p = parse_prototxt(text)
    assert p["name"] == ["net"]
    assert p["input_shape"][0]["dim"] == [1, 3]
    assert [l["name"][0] for l in p["layer"]] == ["a", "b"]
    assert p["layer"][0]["param"][0]["lr_mult"] == [0]
    assert p["layer"][1]["flag"] == [True] and p["layer"][1]["value"] == [2.5]


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, payload):
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_caffemodel_reader_on_handmade_message(tmp_path):
    shape = _field(1, b"".join(_varint(d) for d in (2, 3)))
    data = np.arange(6, dtype="<f4").tobytes()
    blob = _field(7, shape) + _field(5, data)
    layer = _field(1, b"conv") + _field(2, b"Convolution") + _field(7, blob)
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_field(100, layer))
    w = read_caffemodel(path)
    np.testing.assert_array_equal(w["conv"][0], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_real_res10_weights(shared_weights):
    w = read_caffemodel(shared_weights / "res10_300x300_ssd_iter_140000.caffemodel")
    assert w["conv1_h"][0].shape == (32, 3, 7, 7)
    assert [b.shape for b in w["data_bn"]] == [(3,), (3,), (1,)]
