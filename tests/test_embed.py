"""Embeddings of a shard: model loading, output choice, Koalarization's input, the .npy."""

import io
import os
import tarfile
import urllib.error

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from imgprep.config import section_config  # noqa: E402
from imgprep.stages import embed  # noqa: E402
from imgprep.stages.embed import (  # noqa: E402
    EmbedError,
    EmbedParams,
    embed_shard,
    koalarization_batch,
    load_model,
)
from PIL import Image  # noqa: E402


def embed_params(**values) -> EmbedParams:
    """EmbedParams from the schema's defaults and ``values`` (config keys)."""
    return EmbedParams.from_config(section_config("embed", values))


SMALL = {"model": "MobileNetV3Small", "weights": None, "input_size": 32, "batch_size": 3}


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _jpegs(n: int, size=(40, 30)) -> list[bytes]:
    rng = np.random.default_rng(n)
    return [_jpeg(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _tar(path, jpegs: list[bytes]):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for position, data in enumerate(jpegs):
            info = tarfile.TarInfo(f"{position:06d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    """A small whole model saved to a .keras file."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(5, name="feat"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(autouse=True)
def _fresh_cache():
    embed.clear_cache()
    yield
    embed.clear_cache()


# -- parameters ------------------------------------------------------------------------


def test_defaults_are_koalarizations():
    params = embed_params()
    assert (params.model, params.weights, params.output) == (
        "InceptionResNetV2",
        "imagenet",
        "logits",
    )
    assert (params.input_size, params.batch_size, params.seed) == (299, 32, 0)
    partial = section_config("embed")
    del partial["seed"]
    with pytest.raises(ValueError, match=r"embed\.seed: missing"):
        EmbedParams.from_config(partial)  # the defaults are the schema's alone


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"model": "NoSuchNet"}, "model"),
        ({"weights": "/no/such/file.h5"}, "weights"),
        ({"weights": 3}, "weights"),
        ({"input_size": 0}, "input_size"),
        ({"batch_size": "8"}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"output": ""}, "output"),
        ({"colour": 1}, "colour"),
    ],
)
def test_from_config_names_the_bad_key(cfg, key):
    with pytest.raises(ValueError, match=key):
        EmbedParams.from_config({**section_config("embed"), **cfg})


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="InceptionResNetV2|ResNet50|MobileNet"):
        EmbedParams.from_config({**section_config("embed"), "model": "Inception"})


# -- models ----------------------------------------------------------------------------


def test_random_init_is_deterministic():
    params = embed_params(**SMALL)
    batch = koalarization_batch(_jpegs(2), 32)
    first = load_model(params)
    assert load_model(params) is first  # memoized
    a = first.predict_on_batch(batch)
    embed.clear_cache()
    second = load_model(params)
    assert second is not first
    np.testing.assert_array_equal(a, second.predict_on_batch(batch))
    embed.clear_cache()
    other = load_model(embed_params(**{**SMALL, "seed": 1}))
    assert not np.array_equal(a, other.predict_on_batch(batch))


def test_output_modes_shapes():
    assert load_model(embed_params(**SMALL)).output_shape == (None, 1000)
    assert load_model(embed_params(**SMALL, output="pooled")).output_shape == (None, 576)
    named = load_model(embed_params(**SMALL, output="predictions"))
    assert named.output_shape == (None, 1000)
    inner = load_model(embed_params(**SMALL, output="expanded_conv_squeeze_excite_avg_pool"))
    assert inner.output_shape == (None, 1, 1, 16)
    with pytest.raises(EmbedError, match="no_such_layer"):
        load_model(embed_params(**SMALL, output="no_such_layer"))


def test_weights_file_loads_into_the_architecture(tmp_path):
    source = load_model(embed_params(**{**SMALL, "seed": 7}))
    path = tmp_path / "small.weights.h5"
    source.save_weights(path)
    batch = koalarization_batch(_jpegs(2), 32)
    loaded = load_model(embed_params(**{**SMALL, "weights": str(path)}))
    np.testing.assert_array_equal(source.predict_on_batch(batch), loaded.predict_on_batch(batch))


def test_whole_model_file(tiny_keras):
    base = {"weights": str(tiny_keras), "input_size": 32}
    saved = keras.models.load_model(tiny_keras)
    batch = koalarization_batch(_jpegs(2), 32)
    logits = load_model(embed_params(**base))
    assert logits.output_shape == (None, 3)
    np.testing.assert_allclose(logits.predict_on_batch(batch), saved.predict_on_batch(batch))
    assert load_model(embed_params(**base, output="pooled")).output_shape == (None, 4)
    assert load_model(embed_params(**base, output="feat")).output_shape == (None, 5)


def test_offline_imagenet_says_which_file_goes_where(tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", refuse)
    params = embed_params(model="MobileNetV3Small", input_size=224, output="pooled")
    with pytest.raises(EmbedError) as info:
        load_model(params)
    message = str(info.value)
    name = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    assert name in message
    assert str(tmp_path / "models" / name) in message
    assert "local" in message


# -- input and shard -------------------------------------------------------------------


def test_koalarization_batch_is_gray_in_minus_one_one():
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 200
    jpegs = [_jpeg(red), *_jpegs(2)]
    batch = koalarization_batch(jpegs, 16)
    assert batch.shape == (3, 16, 16, 3)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch[..., 0], batch[..., 1])
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
    assert batch.min() >= -1.0
    assert batch.max() <= 1.0
    with Image.open(io.BytesIO(jpegs[0])) as image:
        gray = image.convert("L").getpixel((15, 10))
    # a flat image: the resized gray is Pillow's convert('L') value, scaled
    np.testing.assert_allclose(batch[0, 8, 8, 0], gray / 127.5 - 1.0, atol=1.5 / 127.5)
    assert abs(gray - round(0.299 * 200)) <= 2
    assert koalarization_batch([], 16).shape == (0, 16, 16, 3)


def test_embed_shard_matches_the_model(tmp_path, tiny_keras):
    jpegs = _jpegs(7)
    tar = _tar(tmp_path / "shard.tar", jpegs)
    params = embed_params(weights=str(tiny_keras), output="feat", input_size=32, batch_size=3)
    out = tmp_path / "out" / "shard.npy"
    assert embed_shard(tar, out, params) == 7
    got = np.load(out)
    assert got.dtype == np.float32
    assert got.shape == (7, 5)
    model = load_model(params)
    want = np.asarray(model(koalarization_batch(jpegs, 32), training=False))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["shard.npy"]  # no temp files left


def test_embed_shard_empty_tar(tmp_path):
    tar = _tar(tmp_path / "empty.tar", [])
    out = tmp_path / "empty.npy"
    params = embed_params(**SMALL, output="pooled")
    assert embed_shard(tar, out, params, threads=2) == 0
    got = np.load(out)
    assert got.shape == (0, 576)
    assert got.dtype == np.float32


def test_decode_threads_change_nothing(tmp_path, tiny_keras):
    """Decoding side by side keeps every image in its slot: the same bytes as one thread."""
    jpegs = _jpegs(11)
    tar = _tar(tmp_path / "shard.tar", jpegs)
    params = embed_params(weights=str(tiny_keras), output="feat", input_size=32, batch_size=3)
    outs = []
    for decode_threads in (1, 3):
        out = tmp_path / f"{decode_threads}.npy"
        assert embed_shard(tar, out, params, decode_threads=decode_threads) == 11
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    want = np.asarray(load_model(params)(koalarization_batch(jpegs, 32), training=False))
    np.testing.assert_allclose(np.load(tmp_path / "3.npy"), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_runs_close_to_float32(tmp_path, precision):
    jpegs = _jpegs(4, size=(32, 32))
    tar = _tar(tmp_path / "shard.tar", jpegs)
    embeddings = {}
    for name in ("float32", precision):
        params = embed_params(**SMALL, output="pooled", precision=name)
        out = tmp_path / f"{name}.npy"
        embed_shard(tar, out, params)
        embeddings[name] = np.load(out)
        layer = load_model(params).layers[2]
        assert layer.dtype_policy.name == name  # the policy reached the network's layers
        assert layer.variable_dtype == "float32"  # mixed: float32 variables
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored
    want, got = embeddings["float32"], embeddings[precision]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert not np.array_equal(got, want)  # really computed in 16 bits
    if precision == "mixed_bfloat16":
        # float32's range: close. (A random MobileNetV3's activations, ~1e-10, are below
        # float16's range and come out 0; trained weights keep them near 1.)
        assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_mixed_precision_refuses_a_whole_model_file(tiny_keras):
    with pytest.raises(ValueError, match="precision mixed_float16 needs a model built here"):
        embed_params(weights=str(tiny_keras), output="feat", precision="mixed_float16")
    with pytest.raises(ValueError, match="config key 'embed.precision'"):
        embed_params(**SMALL, precision="float64")
