"""TF-slim Inception-ResNet-v2 checkpoints as embed.weights: slim's names onto Keras' layers.

The test writes its own checkpoint: Keras' InceptionResNetV2 (75 px, 1001 classes) with
random weights, each written under the slim name of the layer it is — found here by
the order Keras creates its layers, which follows slim's code line for line, not by
the graph walk imgprep.slim does — in the V1 format of the real
inception_resnet_v2_2016_08_30.ckpt (and V2). Loaded back through embed.weights, the
model must give the same 1001 logits.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from imgprep import slim  # noqa: E402
from imgprep.config import section_config  # noqa: E402
from imgprep.stages import embed  # noqa: E402
from imgprep.stages.embed import EmbedError, EmbedParams, load_model  # noqa: E402


def embed_params(**values) -> EmbedParams:
    """EmbedParams from the schema's defaults and ``values`` (config keys)."""
    return EmbedParams.from_config(section_config("embed", values))


SIZE = 75  # Keras' smallest InceptionResNetV2 input: fast enough for CI

# Names and shapes as slim's inception_resnet_v2.py creates them (and the 2016_08_30
# checkpoint holds them), one or more per kind of block
SLIM_FACTS = {
    "InceptionResnetV2/Conv2d_1a_3x3/weights": (3, 3, 3, 32),
    "InceptionResnetV2/Conv2d_1a_3x3/BatchNorm/beta": (32,),
    "InceptionResnetV2/Conv2d_4a_3x3/BatchNorm/moving_variance": (192,),
    "InceptionResnetV2/Mixed_5b/Branch_1/Conv2d_0b_5x5/weights": (5, 5, 48, 64),
    "InceptionResnetV2/Mixed_5b/Branch_3/Conv2d_0b_1x1/weights": (1, 1, 192, 64),
    "InceptionResnetV2/Repeat/block35_1/Branch_2/Conv2d_0c_3x3/weights": (3, 3, 48, 64),
    "InceptionResnetV2/Repeat/block35_10/Conv2d_1x1/biases": (320,),
    "InceptionResnetV2/Mixed_6a/Branch_1/Conv2d_1a_3x3/weights": (3, 3, 256, 384),
    "InceptionResnetV2/Repeat_1/block17_20/Branch_1/Conv2d_0b_1x7/weights": (1, 7, 128, 160),
    "InceptionResnetV2/Repeat_1/block17_1/Conv2d_1x1/weights": (1, 1, 384, 1088),
    "InceptionResnetV2/Mixed_7a/Branch_2/Conv2d_0b_3x3/weights": (3, 3, 256, 288),
    "InceptionResnetV2/Repeat_2/block8_9/Branch_1/Conv2d_0c_3x1/BatchNorm/moving_mean": (256,),
    "InceptionResnetV2/Block8/Conv2d_1x1/weights": (1, 1, 448, 2080),
    "InceptionResnetV2/Conv2d_7b_1x1/weights": (1, 1, 2080, 1536),
    "InceptionResnetV2/Logits/Logits/weights": (1536, 1001),
    "InceptionResnetV2/Logits/Logits/biases": (1001,),
}
# in the real checkpoint too, and of no use to inference
IGNORED = {
    "global_step": np.int64(1),
    "InceptionResnetV2/AuxLogits/Logits/biases": np.zeros(1001, np.float32),
    "InceptionResnetV2/AuxLogits/Conv2d_1b_1x1/weights": np.zeros((1, 1, 1088, 128), np.float32),
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    embed.clear_cache()
    yield
    embed.clear_cache()


def build_recording(monkeypatch):
    """Keras' InceptionResNetV2 with random weights, and its layers in creation order."""
    from keras.src import layers

    created = []

    class Conv2D(layers.Conv2D):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    class BatchNormalization(layers.BatchNormalization):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    with monkeypatch.context() as patch:
        patch.setattr(layers, "Conv2D", Conv2D)
        patch.setattr(layers, "BatchNormalization", BatchNormalization)
        keras.utils.set_random_seed(5)
        model = keras.applications.InceptionResNetV2(
            weights=None,
            input_shape=(SIZE, SIZE, 3),
            classes=1001,
            classifier_activation=None,
        )
    rng = np.random.default_rng(7)
    for layer in model.layers:  # every weight random, batch norm statistics too
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if "variance" in weight.name:
                values.append(rng.uniform(0.5, 1.5, shape))
            elif len(shape) > 1:
                values.append(rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape))
            else:
                values.append(rng.normal(0, 0.1, shape))
        if values:
            layer.set_weights([v.astype(np.float32) for v in values])
    return model, created


def slim_tensors(model, created) -> dict[str, np.ndarray]:
    """The model's weights under slim's names, paired by creation order."""
    names = slim.slim_variable_names(include_top=False)
    scopes = [name.removesuffix("/weights") for name in names if name.endswith("/weights")]
    tensors = {}
    layers = iter(created)
    for scope in scopes:
        conv = next(layers)
        assert isinstance(conv, keras.layers.Conv2D), scope
        kernel, *bias = conv.get_weights()
        tensors[f"{scope}/weights"] = kernel
        if bias:  # the closing 1x1 of a residual block: biases, no batch norm
            tensors[f"{scope}/biases"] = bias[0]
            continue
        batch_norm = next(layers)
        assert isinstance(batch_norm, keras.layers.BatchNormalization), scope
        statistics = ("beta", "moving_mean", "moving_variance")
        for name, value in zip(statistics, batch_norm.get_weights(), strict=True):
            tensors[f"{scope}/BatchNorm/{name}"] = value
    assert next(layers, None) is None
    kernel, bias = model.get_layer("predictions").get_weights()
    tensors["InceptionResnetV2/Logits/Logits/weights"] = kernel
    tensors["InceptionResnetV2/Logits/Logits/biases"] = bias
    return tensors


def save_v1(path, tensors):
    """A V1 checkpoint, one file, as the 2016 checkpoint is."""
    names = sorted(tensors)
    tf.raw_ops.Save(filename=str(path), tensor_names=names, data=[tensors[n] for n in names])


def save_v2(prefix, tensors):
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tensors[n] for n in names],
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    try:
        model, created = build_recording(monkeypatch)
    finally:
        monkeypatch.undo()
    tensors = slim_tensors(model, created)
    folder = tmp_path_factory.mktemp("slim")
    v1 = folder / "inception_resnet_v2_2016_08_30.ckpt"
    save_v1(v1, {**tensors, **IGNORED})
    v2 = folder / "v2" / "model.ckpt-7"
    v2.parent.mkdir()
    save_v2(v2, {**tensors, **IGNORED})
    batch = np.random.default_rng(3).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    pooled = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    return {
        "tensors": tensors,
        "v1": v1,
        "v2": v2,
        "batch": batch,
        "logits": np.asarray(model.predict_on_batch(batch)),
        "pooled": np.asarray(pooled.predict_on_batch(batch)),
    }


def test_names_are_slims():
    names = slim.slim_variable_names()
    assert len(names) == len(set(names)) == 898  # every weight of Keras' model, 1001 classes
    assert set(SLIM_FACTS) <= set(names)
    assert not [name for name in names if "AuxLogits" in name or "gamma" in name]
    assert len(slim.slim_variable_names(include_top=False)) == 896


def test_checkpoint_files(checkpoints, tmp_path):
    v1, v2 = checkpoints["v1"], checkpoints["v2"]
    assert sorted(os.listdir(v1.parent)) == [v1.name, "v2"]  # V1: a single file
    assert slim.checkpoint_files(v1) == [str(v1)]
    assert slim.checkpoint_files(v2) == [
        f"{v2}.index",
        f"{v2}.data-00000-of-00001",
    ]
    assert slim.checkpoint_files("imagenet") is None
    assert slim.checkpoint_files(None) is None
    (tmp_path / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    assert slim.checkpoint_files(tmp_path / "w.h5") is None
    shapes = tf.train.load_checkpoint(str(v1)).get_variable_to_shape_map()
    for name, shape in SLIM_FACTS.items():
        assert tuple(shapes[name]) == shape, name


def test_v1_checkpoint_gives_the_models_own_1001_logits(checkpoints):
    params = embed_params(weights=str(checkpoints["v1"]), input_size=SIZE, batch_size=3)
    model = load_model(params)
    assert model.output_shape == (None, 1001)
    got = np.asarray(model.predict_on_batch(checkpoints["batch"]))
    np.testing.assert_array_equal(got, checkpoints["logits"])


def test_v2_checkpoint_pooled_features(checkpoints):
    params = embed_params(weights=str(checkpoints["v2"]), input_size=SIZE, output="pooled")
    model = load_model(params)
    assert model.output_shape == (None, 1536)
    got = np.asarray(model.predict_on_batch(checkpoints["batch"]))
    np.testing.assert_array_equal(got, checkpoints["pooled"])


def test_a_checkpoint_missing_variables_is_refused(checkpoints, tmp_path):
    tensors = dict(checkpoints["tensors"])
    del tensors["InceptionResnetV2/Repeat_1/block17_3/Branch_0/Conv2d_1x1/weights"]
    path = tmp_path / "partial.ckpt"
    save_v1(path, tensors)
    with pytest.raises(EmbedError, match="lacks 1 variable.*block17_3/Branch_0"):
        load_model(embed_params(weights=str(path), input_size=SIZE))
    with pytest.raises(ValueError, match="model must be InceptionResNetV2"):
        EmbedParams.from_config(
            {**section_config("embed"), "weights": str(path), "model": "InceptionV3"}
        )
