"""TF-slim Inception-ResNet-v2 checkpoints (Deep Koalarization's embedding network) on Keras.

Deep Koalarization embeds with TF-slim's ``inception_resnet_v2`` restored from
``inception_resnet_v2_2016_08_30.ckpt``: 1001 logits, class 0 the background. Keras'
``InceptionResNetV2`` is the same network layer for layer (its ImageNet weights were
converted from that checkpoint, background dropped), so built with ``classes=1001`` it
takes every variable of the checkpoint and gives the same 1001 logits.

Slim names its variables by scope (``research/slim/nets/inception_resnet_v2.py``):
``InceptionResnetV2/<scope>/weights`` for a convolution, ``.../BatchNorm/{beta,
moving_mean,moving_variance}`` for its batch norm (no gamma: slim's ``scale=False``,
as Keras' ``conv2d_bn``), ``.../biases`` for the un-normalised 1x1 convolution that
closes each residual block, ``Logits/Logits/{weights,biases}`` for the classifier.
The repeated blocks live under ``Repeat/block35_{1..10}``, ``Repeat_1/block17_{1..20}``
and ``Repeat_2/block8_{1..9}``; the tenth block8 (no activation) is ``Block8``.
``AuxLogits`` (a training-only head) and ``global_step`` have no Keras counterpart and
are ignored. Keras names most of its layers by a process-wide counter, so the mapping
walks Keras' graph instead: every concatenation (``mixed_5b``, ``block35_1_mixed``, …)
is fed by branches, each a chain of convolutions from the block's input.

Only the file layout is looked at without TensorFlow (config validation, the rules'
inputs); loading imports it.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "SCOPE",
    "checkpoint_files",
    "is_checkpoint",
    "load_into_keras",
    "slim_variable_names",
]

SCOPE = "InceptionResnetV2"
MODEL = "InceptionResNetV2"  # the keras.applications model the mapping is for
CLASSES = 1001
_DATA = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_V1_NAME = re.compile(r"\.ckpt(-\d+)?$")


# -- the checkpoint's files -------------------------------------------------------------


def checkpoint_files(weights) -> list[str] | None:
    """The files a TensorFlow checkpoint ``weights`` consists of; None if it is none.

    V2 (TF >= 0.12): ``<prefix>.index`` and ``<prefix>.data-XXXXX-of-NNNNN``, named by
    the prefix. V1 (what ``inception_resnet_v2_2016_08_30.ckpt`` is): one file, named
    ``*.ckpt`` or ``*.ckpt-<step>``. A V2 prefix missing a data shard is an error.
    """
    if weights is None or weights == "imagenet":
        return None
    prefix = Path(weights)
    index = prefix.parent / f"{prefix.name}.index"
    if index.is_file():
        data = sorted(str(p) for p in prefix.parent.glob(f"{prefix.name}.data-*"))
        totals = {int(m.group(2)) for m in map(_DATA.search, data) if m}
        if len(totals) != 1 or len(data) != totals.pop():
            raise ValueError(
                f"checkpoint {weights}: data files {[Path(p).name for p in data]} are "
                "not one complete set <prefix>.data-XXXXX-of-NNNNN"
            )
        return [str(index), *data]
    if prefix.is_file() and _V1_NAME.search(prefix.name):
        return [str(prefix)]
    return None


def is_checkpoint(weights) -> bool:
    try:
        return checkpoint_files(weights) is not None
    except ValueError:
        return True  # a checkpoint, but a broken one: checkpoint_files says why


# -- names --------------------------------------------------------------------------


def _branches(*branches):
    """[(branch number, [conv scope, ...]), ...] for the named branches of one block."""
    return [(f"Branch_{number}", convs) for number, convs in enumerate(branches)]


# Per concatenation, slim's branches in Keras' (and slim's) concatenation order; an
# empty branch is a pooling.
_MIXED_5B = _branches(
    ["Conv2d_1x1"],
    ["Conv2d_0a_1x1", "Conv2d_0b_5x5"],
    ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"],
    ["Conv2d_0b_1x1"],
)
_BLOCK35 = _branches(
    ["Conv2d_1x1"],
    ["Conv2d_0a_1x1", "Conv2d_0b_3x3"],
    ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"],
)
_MIXED_6A = _branches(
    ["Conv2d_1a_3x3"],
    ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"],
    [],
)
_BLOCK17 = _branches(["Conv2d_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"])
_MIXED_7A = _branches(
    ["Conv2d_0a_1x1", "Conv2d_1a_3x3"],
    ["Conv2d_0a_1x1", "Conv2d_1a_3x3"],
    ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"],
    [],
)
_BLOCK8 = _branches(["Conv2d_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"])
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]


def _blocks():
    """(Keras concatenation layer, slim scope, branches, slim scope of the closing conv)."""
    yield "mixed_5b", "Mixed_5b", _MIXED_5B, None
    for i in range(1, 11):
        scope = f"Repeat/block35_{i}"
        yield f"block35_{i}_mixed", scope, _BLOCK35, (f"block35_{i}_conv", scope)
    yield "mixed_6a", "Mixed_6a", _MIXED_6A, None
    for i in range(1, 21):
        scope = f"Repeat_1/block17_{i}"
        yield f"block17_{i}_mixed", scope, _BLOCK17, (f"block17_{i}_conv", scope)
    yield "mixed_7a", "Mixed_7a", _MIXED_7A, None
    for i in range(1, 11):
        scope = f"Repeat_2/block8_{i}" if i < 10 else "Block8"
        yield f"block8_{i}_mixed", scope, _BLOCK8, (f"block8_{i}_conv", scope)


def _conv_bn(scope: str) -> list[str]:
    """A slim conv2d with batch norm: weights, then beta, moving mean and variance."""
    return [f"{SCOPE}/{scope}/weights"] + [
        f"{SCOPE}/{scope}/BatchNorm/{name}" for name in ("beta", "moving_mean", "moving_variance")
    ]


def slim_variable_names(include_top: bool = True) -> list[str]:
    """Every variable of slim's inference graph the Keras model takes, in mapping order."""
    names = [name for scope in _STEM for name in _conv_bn(scope)]
    for _, scope, branches, closing in _blocks():
        for branch, convs in branches:
            for conv in convs:
                names += _conv_bn(f"{scope}/{branch}/{conv}")
        if closing:
            names += [f"{SCOPE}/{scope}/Conv2d_1x1/weights", f"{SCOPE}/{scope}/Conv2d_1x1/biases"]
    names += _conv_bn("Conv2d_7b_1x1")
    if include_top:
        names += [f"{SCOPE}/Logits/Logits/weights", f"{SCOPE}/Logits/Logits/biases"]
    return names


# -- Keras' graph -------------------------------------------------------------------


def _producer(tensor):
    """The layer that made ``tensor`` and the tensors it was called on."""
    layer, node_index, _ = tensor._keras_history
    return layer, list(layer._inbound_nodes[node_index].input_tensors)


def _chain(tensor) -> list:
    """Tensors from ``tensor`` back through single-input layers (``tensor`` first)."""
    chain = [tensor]
    while True:
        _, inputs = _producer(chain[-1])
        if len(inputs) != 1:
            return chain
        chain.append(inputs[0])


def _convs_before(tensor, start, keras) -> list:
    """Conv2D layers on the way from ``start`` to ``tensor``, in forward order."""
    convs = []
    while tensor is not start:
        layer, (tensor,) = _producer(tensor)
        if isinstance(layer, keras.layers.Conv2D):
            convs.append(layer)
    return convs[::-1]


def _keras_layers(model, include_top: bool) -> list:
    """(slim scope, Conv2D or Dense, its BatchNormalization or None), block by block.

    Keras' private graph links (``_keras_history``, ``_inbound_nodes``) are what tells
    the branches apart: most layers have counter names.
    """
    import keras  # env: only embed_shard loads weights

    bn_after = {
        layer.input._keras_history[0].name: layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    pairs = []
    for concat_name, scope, branches, closing in _blocks():
        ends = list(model.get_layer(concat_name)._inbound_nodes[0].input_tensors)
        chains = [_chain(end) for end in ends]
        common = [t for t in chains[0] if all(any(t is u for u in c) for c in chains[1:])]
        block_input = common[0]  # the first tensor every branch comes from
        if not pairs:  # the stem: from the model's input to mixed_5b's input
            stem = _convs_before(block_input, model.inputs[0], keras)
            pairs += [(s, conv) for s, conv in zip(_STEM, stem, strict=True)]
        if len(ends) != len(branches):
            raise ValueError(f"{concat_name}: {len(ends)} branches, slim has {len(branches)}")
        for end, (branch, convs) in zip(ends, branches, strict=True):
            found = _convs_before(end, block_input, keras)
            pairs += [(f"{scope}/{branch}/{c}", conv) for c, conv in zip(convs, found, strict=True)]
        if closing:
            pairs.append((f"{scope}/Conv2d_1x1", model.get_layer(closing[0])))
    pairs.append(("Conv2d_7b_1x1", model.get_layer("conv_7b")))
    layers = [(scope, conv, bn_after.get(conv.name)) for scope, conv in pairs]
    if include_top:
        layers.append(("Logits/Logits", model.get_layer("predictions"), None))
    return layers


def load_into_keras(model, weights, include_top: bool = True) -> None:
    """Set every weight of Keras' InceptionResNetV2 ``model`` from slim checkpoint ``weights``.

    ``model`` is built with ``classes=1001`` (``include_top``) or without its top. Every
    variable the model needs must be in the checkpoint with the shape the model has.
    """
    import tensorflow as tf  # env: only embed_shard loads weights

    files = checkpoint_files(weights)
    if files is None:
        raise ValueError(f"{weights} is not a TensorFlow checkpoint")
    reader = tf.train.load_checkpoint(str(weights))
    shapes = reader.get_variable_to_shape_map()
    missing = [name for name in slim_variable_names(include_top) if name not in shapes]
    if missing:
        raise ValueError(
            f"checkpoint {weights} lacks {len(missing)} variable(s) of slim's "
            f"{SCOPE}, e.g. {missing[:3]}"
        )
    for scope, conv, batch_norm in _keras_layers(model, include_top):
        prefix = f"{SCOPE}/{scope}"
        values = [reader.get_tensor(f"{prefix}/weights")]
        if conv.use_bias:
            values.append(reader.get_tensor(f"{prefix}/biases"))
        _assign(conv, values, prefix)
        if batch_norm is not None:
            names = ("beta", "moving_mean", "moving_variance")
            _assign(
                batch_norm, [reader.get_tensor(f"{prefix}/BatchNorm/{n}") for n in names], prefix
            )


def _assign(layer, values, prefix: str) -> None:
    want = [tuple(w.shape) for w in layer.weights]
    got = [tuple(v.shape) for v in values]
    if want != got:
        raise ValueError(f"{prefix}: checkpoint shapes {got}, Keras layer {layer.name} has {want}")
    layer.set_weights(values)
