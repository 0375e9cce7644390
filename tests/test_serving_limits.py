"""`serving_bytes` refuses images too large to decode from their header, and empty batches
give empty outputs: a request cannot exhaust the server's memory."""

import json
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import export
from tfrobust.cli.main import main
from tfrobust.export.saved_model import declared_size


def png_of_size(height, width):
    """A valid grayscale PNG of zeros, compressed row by row (never whole in memory)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    compressor = zlib.compressobj(6)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def test_declared_size_reads_png_and_jpeg_headers_without_decoding():
    image = np.zeros((37, 53, 3), np.uint8)
    for encoded in (tf.io.encode_png(image), tf.io.encode_jpeg(image)):
        assert [int(v) for v in declared_size(encoded)] == [37, 53]
    assert [int(v) for v in declared_size(tf.constant(png_of_size(300, 7)))] == [300, 7]
    assert [int(v) for v in declared_size(tf.constant(b"GIF89a......"))] == [-1, -1]
    assert [int(v) for v in declared_size(tf.constant(b""))] == [-1, -1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    root = tmp_path_factory.mktemp("served")
    small = export.export_saved_model(model, root / "small", allow_untrained=True,
                                      max_image_pixels=100 * 100)
    default = export.export_saved_model(model, root / "default", allow_untrained=True)
    return model, small, default


def test_the_limit_is_recorded_and_defaults_to_4096_squared(served):
    _, small, default = served
    assert small.max_image_pixels == 10_000 and default.max_image_pixels == 4096 * 4096
    assert int(tf.saved_model.load(small.path).max_image_pixels[0].numpy()) == 10_000
    assert export.saved_model.default_max_image_pixels((1000, 1000, 3)) == 64 * 10 ** 6


def test_images_over_the_limit_and_other_formats_are_refused_before_decoding(served):
    model, small, _ = served
    serve = tf.saved_model.load(small.path).signatures["serving_bytes"]
    ok = serve(image_bytes=tf.constant([png_of_size(100, 100)]))
    assert ok["logits"].shape == (1, 10)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"at most max_image_pixels=10000 pixels"):
        serve(image_bytes=tf.constant([png_of_size(101, 100)]))
    jpeg = tf.io.encode_jpeg(np.zeros((200, 60, 1), np.uint8)).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels=10000"):
        serve(image_bytes=tf.constant([jpeg]))
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    with pytest.raises(tf.errors.InvalidArgumentError, match="PNG or JPEG files"):
        serve(image_bytes=tf.constant([gif]))


def test_an_empty_batch_gives_empty_outputs(served):
    _, small, _ = served
    loaded = tf.saved_model.load(small.path)
    from_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant([], tf.string))
    from_images = loaded.signatures["serving_default"](images=tf.zeros((0, 28, 28, 1)))
    for outputs in (from_bytes, from_images):
        assert outputs["logits"].shape == (0, 10) and outputs["classes"].shape == (0,)


_WORST = """
import json, resource, sys
import tensorflow as tf
sys.path.insert(0, {tests!r})
from test_serving_limits import png_of_size
serve = tf.saved_model.load({path!r}).signatures["serving_bytes"]
serve(image_bytes=tf.constant([png_of_size(28, 28)]))  # warm: every op loaded and run
huge = png_of_size(20000, 20000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    serve(image_bytes=tf.constant([huge]))
    refused = ""
except tf.errors.InvalidArgumentError as error:
    refused = error.message
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"bytes": len(huge), "refused": refused, "grew_mb": (after - before) / 1024}}))
"""


def test_a_20000_pixel_square_png_is_refused_within_200_mb(served):
    _, _, default = served
    import os
    code = _WORST.format(tests=os.path.dirname(__file__), path=default.path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n20000 x 20000 PNG of {result['bytes']} bytes: peak RSS grew "
          f"{result['grew_mb']:.1f} MB")
    assert "max_image_pixels=16777216" in result["refused"]
    assert result["grew_mb"] < 200


def test_tfrobust_export_sets_and_prints_the_limit(served, tmp_path, capsys):
    model, _, _ = served
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert main(["export", path, str(tmp_path / "out"), "--max-image-pixels", "5000",
                 "--allow-untrained"]) == 0
    assert "refuses images of more than 5000 pixels" in capsys.readouterr().out
    assert int(tf.saved_model.load(str(tmp_path / "out" / "1")).max_image_pixels[0].numpy()) == 5000
    assert main(["export", path, str(tmp_path / "out2"), "--max-image-pixels", "0",
                 "--allow-untrained"]) == 1
    assert "max_image_pixels" in capsys.readouterr().err
