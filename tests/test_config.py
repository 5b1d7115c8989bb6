import copy

import pytest
import yaml
from helpers import REPO, base_config
from imgprep.config import ConfigError, validate_config


@pytest.fixture
def config(tmp_path):
    (tmp_path / "src" / "train").mkdir(parents=True)
    return base_config(tmp_path / "src", tmp_path / "results")


def test_default_config_file_is_valid():
    with open(REPO / "config.yaml") as handle:
        config = validate_config(yaml.safe_load(handle))
    assert config["source"]["root"] == "resources/sample"


def test_defaults_are_filled(config):
    validated = validate_config(config)
    assert validated["resize"]["mode"] == "center-crop"
    assert validated["resize"]["size"] == 256
    assert validated["labels"]["base"] == 0
    assert validated["records"]["schemas"] == ["imagenet"]
    assert validated["threads"]["resize"] >= 1
    assert "resize" not in config, "the caller's dict is not modified"
    del config["splits"]
    assert validate_config(config)["splits"] == {
        "train": {"shards": 1024},
        "validation": {"shards": 128},
    }


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c["resize"].update(mode="squash"), "resize.mode"),
        (lambda c: c["resize"].update(sise=3), "resize.sise"),
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c["resize"].update(quality=101), "resize.quality"),
        (lambda c: c["resize"].update(size=[1, 2, 3]), "resize.size"),
        (lambda c: c["splits"]["train"].update(shards=0), "splits.train.shards"),
        (lambda c: c["labels"].update(base=2), "labels.base"),
        (lambda c: c["records"].update(schemas=["tfds"]), "records.schemas.0"),
        (lambda c: c["records"].update(compression="bz2"), "records.compression"),
        (lambda c: c["source"].update(layout="flat"), "source.layout"),
        (lambda c: c["source"].update(root="/nonexistent/imgprep"), "source.root"),
        (lambda c: c["labels"].update(file="/nonexistent/labels.txt"), "labels.file"),
        (lambda c: c["splits"]["train"].update(fraction=0.5), "splits.train.fraction"),
    ],
)
def test_bad_values_fail_naming_the_key(config, edit, key):
    config = copy.deepcopy(config)
    config.update(resize={}, labels={}, records={})
    edit(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert f"'{key}'" in str(error.value)


def test_class_folders_needs_fractions_that_add_up(config):
    config["source"]["layout"] = "class-folders"
    with pytest.raises(ConfigError, match="'splits.train.fraction' is required"):
        validate_config(config)
    config["splits"] = {
        "train": {"shards": 2, "fraction": 0.8},
        "val": {"shards": 1, "fraction": 0.1},
    }
    with pytest.raises(ConfigError, match="add up to 0.9"):
        validate_config(config)
    config["splits"]["val"]["fraction"] = 0.2
    assert validate_config(config)["splits"]["val"]["fraction"] == 0.2


def test_schema_declares_draft_2020_12():
    with open(REPO / "schemas" / "config.schema.yaml") as handle:
        schema = yaml.safe_load(handle)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


KOALARIZATION = {"schemas": ["koalarization"]}


@pytest.mark.parametrize(
    ("records", "embed", "key", "why"),
    [
        (KOALARIZATION, {"output": "pooled"}, "embed.output", "1001 ImageNet logits"),
        (KOALARIZATION, {"output": "conv_7b"}, "embed.output", "FixedLen \\[1001\\]"),
        ({}, {"lab_size": 32}, "embed.lab_size", "224x224 Lab targets"),
        (KOALARIZATION, {"lab_size": 256}, "embed.lab_size", "LabImageRecordReader"),
        (KOALARIZATION, {"weights": "/no/such/weights.h5"}, "embed.weights", "not found"),
    ],
)
def test_koalarization_needs_what_its_reader_declares(config, records, embed, key, why):
    config.update(records=records, embed=embed)
    with pytest.raises(ConfigError, match=f"'{key}'.*{why}"):
        validate_config(config)


def test_koalarization_accepts_its_defaults(config):
    config.update(records=KOALARIZATION, embed={"lab_size": 224})
    validated = validate_config(config)
    assert validated["embed"]["output"] == "logits"
    assert validated["embed"]["lab_size"] == 224


def test_a_slim_checkpoint_needs_inception_resnet_v2(config, tmp_path):
    v1 = tmp_path / "inception_resnet_v2_2016_08_30.ckpt"
    v1.write_bytes(b"\0" * 16)
    v2 = tmp_path / "v2" / "model.ckpt-100"
    v2.parent.mkdir()
    for suffix in (".index", ".data-00000-of-00002", ".data-00001-of-00002"):
        v2.with_name(v2.name + suffix).write_bytes(b"\0")
    for weights in (v1, v2):
        config.update(records=KOALARIZATION, embed={"weights": str(weights)})
        assert validate_config(config)["embed"]["weights"] == str(weights)
        config["embed"]["model"] = "InceptionV3"
        with pytest.raises(ConfigError, match="'embed.model'.*InceptionResNetV2"):
            validate_config(config)
    v2.with_name(v2.name + ".data-00001-of-00002").unlink()
    config["embed"] = {"weights": str(v2)}
    with pytest.raises(ConfigError, match="'embed.weights'.*complete set"):
        validate_config(config)


def test_a_keras_model_for_koalarization_must_output_imagenet_logits(config, tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    config.update(records=KOALARIZATION)
    for units, ok in ((1000, True), (1001, True), (5, False)):
        path = tmp_path / f"m{units}.keras"
        keras.Model(inputs, keras.layers.Dense(units)(pooled)).save(path)
        config["embed"] = {"weights": str(path)}
        if ok:
            assert validate_config(config)["embed"]["weights"] == str(path)
        else:
            with pytest.raises(ConfigError, match="'embed.weights'.*Dense layer of 5 units"):
                validate_config(config)
    path = tmp_path / "features.keras"
    keras.Sequential([inputs, keras.layers.GlobalAveragePooling2D()]).save(path)
    config["embed"] = {"weights": str(path)}
    with pytest.raises(ConfigError, match="'embed.weights'.*no Dense layer"):
        validate_config(config)


def _integer_keys(schema: dict, path=()):
    """Dotted paths of every integer-typed key of the schema (splits via 'train')."""
    if schema.get("type") == "integer":
        yield path
    for name, sub in schema.get("properties", {}).items():
        yield from _integer_keys(sub, (*path, name))
    if isinstance(schema.get("additionalProperties"), dict):  # splits.<name>
        yield from _integer_keys(schema["additionalProperties"], (*path, "train"))
    for option in schema.get("oneOf", ()):  # resize.size: a side
        if option.get("type") == "integer":
            yield path


def _set(config: dict, path: tuple, value) -> None:
    for name in path[:-1]:
        config = config.setdefault(name, {})
    config[path[-1]] = value


def _schema_integer_keys():
    with open(REPO / "schemas" / "config.schema.yaml") as handle:
        return sorted(set(_integer_keys(yaml.safe_load(handle))))


@pytest.mark.parametrize("path", _schema_integer_keys(), ids=".".join)
def test_integer_keys_reject_floats_and_booleans(config, path):
    """JSON Schema's `integer` accepts 4.0; imgprep's does not (4.0 broke range(),
    quality 90.0 the encoder, seed 0.0 silently changed every shard)."""
    validate_config(config)  # the base config is valid
    for value in (4.0, 1.0, True):
        bad = copy.deepcopy(config)
        _set(bad, path, value)
        with pytest.raises(ConfigError) as error:
            validate_config(bad)
        assert f"'{'.'.join(path)}'" in str(error.value), value


def test_integer_keys_cover_the_known_breakers():
    keys = {".".join(path) for path in _schema_integer_keys()}
    assert {"splits.train.shards", "resize.size", "resize.quality", "seed", "labels.base"} <= keys


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c["resize"].update(size=[128.0, 128]), "resize.size"),
        (lambda c: c["resize"].update(fill=[0.0, 0, 0]), "resize.fill.0"),
        (lambda c: c["resize"].update(size=0), "resize.size"),
        (lambda c: c["resize"].update(quality=0), "resize.quality"),
        (lambda c: c.update(seed=-1), "seed"),
        (lambda c: c.update(seed=10**70), "seed"),  # 71 digits: longer than BLAKE2b's key
        (lambda c: c.update(embed={"seed": 2**32}), "embed.seed"),  # numpy's seed range
        (lambda c: c.update(ravel={"pins": 257}), "ravel.pins"),
        (lambda c: c["splits"]["train"].update(shards=100000), "splits.train.shards"),
    ],
)
def test_numbers_out_of_range_fail_naming_the_key(config, edit, key):
    config = copy.deepcopy(config)
    config.update(resize={})
    edit(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert f"'{key}'" in str(error.value)


def test_the_largest_seed_keys_the_shard_hash():
    from imgprep.sources.common import placer as _placer

    largest = validate_config(
        {"source": {"root": str(REPO / "resources" / "sample")}, "seed": 10**64 - 1}
    )["seed"]
    plan = (("train", 1.0, 4),)
    assert _placer(largest)("a/b.JPEG", plan) != _placer(0)("a/b.JPEG", plan)


def test_the_schema_names_exactly_the_registered_source_types():
    from imgprep.config import load_schema
    from imgprep.sources import SOURCE_TYPES

    enum = load_schema()["properties"]["source"]["properties"]["type"]["enum"]
    assert sorted(enum) == sorted(SOURCE_TYPES)
    for name, module in SOURCE_TYPES.items():
        assert callable(module.check) and callable(module.scan), name


def test_an_unknown_source_type_names_the_key_and_the_known_ones():
    from imgprep import sources

    with pytest.raises(ConfigError) as error:
        sources.check({"source": {"type": "ftp"}, "splits": {}})
    assert "config key 'source.type'" in str(error.value)
    assert "folders, kaggle, manifest, tars, urls" in str(error.value)
