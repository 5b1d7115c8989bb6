"""Image embeddings of a resized shard, as in Deep Koalarization: a classifier's output.

Each JPEG of a shard tar (see :mod:`imgprep.stages.resize`) is turned into the grayscale input
Koalarization feeds its Inception-ResNet-v2 (gray, three equal channels, scaled to
[-1, 1]) and run through a ``keras.applications`` model; the shard's embeddings are
written as one float32 ``.npy`` array ``[n, D]`` in position order.

TensorFlow is imported lazily (once per process) so that importing this module, and
the rest of imgprep, stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgprep import slim
from imgprep.atomic import atomic_write
from imgprep.files.tars import read_resized
from imgprep.kernels.embed_input import decoded_batches, koalarization_batch
from imgprep.progress import Progress
from imgprep.sections import require_keys

__all__ = [
    "EmbedError",
    "EmbedParams",
    "clear_cache",
    "embed_shard",
    "koalarization_batch",
    "load_model",
]

# the embed: keys that records read (Lab target size, whether records store the embedding)
_RECORDS_KEYS = ("lab_size", "in_records")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# the schema's default, which imgprep.upstream leaves out of the embed settings' digest
DEFAULT_PRECISION = "float32"
_COMMON = ("InceptionResNetV2", "InceptionV3", "ResNet50", "MobileNetV2", "EfficientNetB0")


class EmbedError(RuntimeError):
    """The model cannot be built or its weights cannot be had."""


@dataclass(frozen=True)
class EmbedParams:
    """Which network, which weights and which of its tensors make the embedding.

    ``weights``: "imagenet" (Keras downloads it to its cache), a local file (a whole
    ``.keras`` model, or ``.h5`` / ``.weights.h5`` weights for ``model``), a TF-slim
    Inception-ResNet-v2 checkpoint (``model`` InceptionResNetV2, 1001 logits; see
    :mod:`imgprep.slim`), or None for a random initialisation drawn from ``seed``.
    ``output``: "logits" (the pre-softmax last layer, Koalarization's embedding),
    "pooled" (global average pooling of the last feature map) or the name of a layer.

    No defaults here: they are the schema's (``from_config`` of the validated config, or
    of ``imgprep.config.section_config("embed", ...)``).
    """

    model: str
    weights: str | None
    output: str
    input_size: int
    batch_size: int
    seed: int
    precision: str

    @classmethod
    def from_config(cls, cfg: dict) -> EmbedParams:
        """Build from the validated config's ``embed:`` mapping (every key present; the
        records' keys ``lab_size`` and ``in_records`` do not change the embeddings)."""
        names = [field.name for field in dataclasses.fields(cls)]
        require_keys("embed", cfg, names, ignored=_RECORDS_KEYS)
        params = cls(**{key: cfg[key] for key in names})
        params.validate()
        return params

    @classmethod
    def from_settings(cls, settings: dict) -> EmbedParams:
        """From ``imgprep.upstream.embed_settings`` (a rule's params), which leaves the
        default precision out so that builds from before the key keep their digests."""
        return cls.from_config({"precision": DEFAULT_PRECISION, **settings})

    def validate(self) -> None:
        if not isinstance(self.model, str) or self.model not in _model_names():
            valid = _model_names()
            close = difflib.get_close_matches(str(self.model), valid, n=3, cutoff=0.5)
            some = close + [name for name in _COMMON if name in valid and name not in close]
            raise ValueError(
                f"embed: model {self.model!r} is not in keras.applications; valid names "
                f"include {', '.join(some[:6])} ({len(valid)} in all)"
            )
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise ValueError(
                f"embed: weights must be 'imagenet', a file path or null, got {self.weights!r}"
            )
        checkpoint = self.weights is not None and slim.is_checkpoint(self.weights)
        if self.weights not in (None, "imagenet") and not (
            checkpoint or Path(self.weights).is_file()
        ):
            raise ValueError(f"embed: weights file {self.weights!r} does not exist")
        if checkpoint and self.model != slim.MODEL:
            raise ValueError(
                f"embed: model must be {slim.MODEL} for the TF-slim checkpoint "
                f"{self.weights}, not {self.model!r}"
            )
        if not isinstance(self.output, str) or not self.output:
            raise ValueError(f"embed: output must be a non-empty string, got {self.output!r}")
        for key in ("input_size", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"embed: {key} must be a positive integer, got {value!r}")
        if self.input_size < 32:
            raise ValueError(f"embed: input_size must be at least 32, got {self.input_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"embed: seed must be a non-negative integer, got {self.seed!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"embed: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.precision != "float32" and self.weights and self.weights.endswith(".keras"):
            raise ValueError(
                f"embed: precision {self.precision} needs a model built here; a whole .keras "
                f"file ({self.weights}) keeps the dtypes it was saved with (use float32, or "
                "save weights only as .weights.h5 with embed model set)"
            )


# -- TensorFlow, lazily -----------------------------------------------------------------

_TF = None
_MODELS: dict = {}
_NAMES: list[str] | None = None


def _tf():
    """Import TensorFlow once per process, quietly."""
    global _TF
    if _TF is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow

        if tensorflow.config.list_physical_devices("GPU"):
            # cuDNN autotuning picks convolution algorithms by timing: without this the same
            # GPU may sum a layer in another order from one run to the next
            tensorflow.config.experimental.enable_op_determinism()
        _TF = tensorflow
    return _TF


def _keras():
    _tf()
    import keras

    return keras


def _model_names() -> list[str]:
    """The model constructors in keras.applications (capitalised callables)."""
    global _NAMES
    if _NAMES is None:
        apps = _keras().applications
        _NAMES = sorted(
            name for name in dir(apps) if name[:1].isupper() and callable(getattr(apps, name))
        )
    return _NAMES


def _set_threads(threads: int) -> None:
    tf = _tf()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    except RuntimeError:
        pass  # the runtime is already initialised: its thread pools are fixed


def clear_cache() -> None:
    """Forget the models load_model memoized (the next load builds afresh)."""
    _MODELS.clear()


def load_model(params: EmbedParams):
    """The keras.Model from an image batch to the chosen embedding (memoized per params)."""
    model = _MODELS.get(params)
    if model is None:
        params.validate()
        with _dtype_policy(params.precision):
            model = _MODELS[params] = _select_output(_build(params), params)
    return model


@contextlib.contextmanager
def _dtype_policy(precision: str):
    """Keras' global dtype policy while a model is built (layers take it at construction),
    restored afterwards so that nothing else built in this process inherits it."""
    policy = _keras().mixed_precision
    before = policy.dtype_policy().name
    policy.set_dtype_policy(precision)
    try:
        yield
    finally:
        policy.set_dtype_policy(before)


def _build(params: EmbedParams):
    keras = _keras()
    weights = params.weights
    if weights is not None and weights != "imagenet" and weights.endswith(".keras"):
        try:
            return keras.models.load_model(weights, compile=False)
        except Exception as error:
            raise EmbedError(f"embed: cannot load the model file {weights}: {error}") from error
    constructor = getattr(keras.applications, params.model)
    size = params.input_size
    checkpoint = weights is not None and slim.is_checkpoint(weights)
    kwargs = {"input_shape": (size, size, 3)}
    if params.output == "pooled":
        kwargs.update(include_top=False, pooling="avg")
    else:
        kwargs.update(include_top=True, classifier_activation=None)
        if checkpoint:
            kwargs.update(classes=slim.CLASSES)  # slim's background class and the 1000
    if weights == "imagenet":
        try:
            return constructor(weights="imagenet", **kwargs)
        except Exception as error:
            url = _fetch_failure_url(str(error))
            if url is None:
                raise EmbedError(f"embed: cannot build {params.model}: {error}") from error
            raise EmbedError(_offline_message(params, url, error)) from error
    keras.utils.set_random_seed(params.seed)
    try:
        model = constructor(weights=None, **kwargs)
    except Exception as error:
        raise EmbedError(f"embed: cannot build {params.model}: {error}") from error
    if checkpoint:
        try:
            slim.load_into_keras(model, weights, include_top=params.output != "pooled")
        except Exception as error:
            raise EmbedError(
                f"embed: cannot load the TF-slim checkpoint {weights} into {params.model}: {error}"
            ) from error
    elif weights is not None:
        try:
            model.load_weights(weights)
        except Exception as error:
            raise EmbedError(
                f"embed: cannot load weights {weights} into {params.model} "
                f"(input_size {size}, output {params.output!r}): {error}"
            ) from error
    return model


def _fetch_failure_url(message: str) -> str | None:
    """The URL in Keras's 'URL fetch failure on <url>: ...' message, if any."""
    match = re.search(r"(https?://[^\s:]+(?::\d+)?/\S+?\.h5)\b", message)
    return match.group(1) if match else None


def _keras_cache_dir() -> Path:
    """Where keras.utils.get_file keeps what keras.applications downloads."""
    try:
        from keras.src.backend import config

        base = config.keras_home()
    except Exception:  # a Keras without that helper
        base = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")  # get_file's own fallback
    return Path(base) / "models"


def _offline_message(params: EmbedParams, url: str, error: Exception) -> str:
    name = url.rsplit("/", 1)[-1]
    target = _keras_cache_dir() / name
    return (
        f"embed: cannot download the ImageNet weights of {params.model} ({error}). "
        f"Put the file {name} (from {url}) at {target} (folder {target.parent}), "
        "or set embed weights to a local .keras / .h5 file."
    )


def _select_output(model, params: EmbedParams):
    """A keras.Model from model.input to the tensor that params.output names."""
    keras = _keras()
    output = params.output
    if output == "logits":
        return model
    if output == "pooled":
        if params.weights is None or not params.weights.endswith(".keras"):
            return model  # built with include_top=False, pooling="avg"
        pools = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.GlobalAveragePooling2D)
        ]
        if not pools:
            raise EmbedError(
                f"embed: output 'pooled' needs a GlobalAveragePooling2D layer in {params.weights}"
            )
        tensor = pools[-1].output
    else:
        try:
            tensor = model.get_layer(output).output
        except ValueError as error:
            names = [layer.name for layer in model.layers]
            raise EmbedError(
                f"embed: output {output!r} is neither 'logits', 'pooled' nor a layer of the "
                f"model (last layers: {names[-5:]})"
            ) from error
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, tensor, name=f"{model.name}_{output}")


def _dim(model) -> int:
    shape = model.outputs[0].shape
    if len(shape) != 2:
        raise EmbedError(
            f"embed: the chosen output has shape {tuple(shape)}; an embedding must be "
            "[batch, D] (pick a pooled or dense layer)"
        )
    return int(shape[-1])


# -- inputs and the shard ---------------------------------------------------------------


def _read_jpegs(tar_path) -> list[bytes]:
    """The shard's JPEGs in position order (resize_shard writes them so already)."""
    items = sorted(read_resized(tar_path), key=lambda item: item[0])
    return [jpeg for _, jpeg in items]


def embed_shard(
    tar_path, out_path, params: EmbedParams, threads: int = 1, decode_threads: int = 1
) -> int:
    """Embed every JPEG of ``tar_path`` in position order; write float32 ``[n, D]`` .npy.

    Returns n. The next batches are decoded by ``decode_threads`` helper threads while the
    model runs on the current one. ``threads`` sets TensorFlow's op thread pools (only
    before the runtime starts; later calls keep the pools it has).
    """
    _set_threads(threads)
    model = load_model(params)
    dim = _dim(model)
    gpus = [device.name for device in _tf().config.list_logical_devices("GPU")]
    print(f"embed: {params.model} {params.precision} on {', '.join(gpus) or 'the CPU'}")
    jpegs = _read_jpegs(tar_path)
    step = params.batch_size
    chunks = [jpegs[start : start + step] for start in range(0, len(jpegs), step)]
    parts = []
    progress = Progress("embed", len(jpegs))
    for chunk, batch in zip(
        chunks, decoded_batches(chunks, params.input_size, decode_threads), strict=True
    ):
        parts.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
        progress.advance(len(chunk))
    progress.finish()
    embeddings = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    embeddings = np.ascontiguousarray(embeddings.reshape(len(jpegs), dim), dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, embeddings, allow_pickle=False)
    with atomic_write(out_path, "wb") as handle:
        handle.write(buffer.getvalue())
    return len(jpegs)
