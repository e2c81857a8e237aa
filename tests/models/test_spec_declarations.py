"""A model spec declares the pictures `fgvc explain` draws for it and the `extras` keys its model emits; a typo
in either fails when the spec is made (registration), one line naming the spec and the key, instead of a plain
picture or an empty statistic later."""

import pytest
from torch import nn

from fgvc.errors import ConfigError
from fgvc.models.registry import MODEL_REGISTRY, ModelSpec, Picture


def _spec(**fields) -> ModelSpec:
    return ModelSpec("toy", nn.Identity, head_prefixes=("head.",), **fields)


def test_a_misspelt_picture_fails_naming_the_spec_the_value_and_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        _spec(pictures=("strip",), extras=("strip_importanceN", "stage_mapN", "strip_edgesN", "stage_strideN"))
    assert str(error.value) == ("model spec 'toy': pictures: 'strip' is not a picture fgvc draws; "
                                "valid: windows, strips, heatmaps")


def test_a_step_stat_of_an_undeclared_extras_key_fails():
    with pytest.raises(ConfigError) as error:
        _spec(step_stats={"object_fallbak": "aolm_fallbacks"}, extras=("object_fallback",))
    assert str(error.value) == ("model spec 'toy': step_stats key 'object_fallbak' is not one of its declared extras "
                                "keys (object_fallback); declare it in extras or fix the name")


def test_a_picture_whose_extras_keys_are_not_declared_fails():
    with pytest.raises(ConfigError) as error:
        _spec(pictures=("windows",), extras=("window_group_size",))
    assert str(error.value) == ("model spec 'toy': picture 'windows' reads extras window_group_sizes, which the spec "
                                "does not declare (declared: window_group_size)")


def test_a_picture_given_as_its_name_is_the_typed_value():
    spec = _spec(pictures=("windows",), extras=("window_group_sizes",))
    assert spec.pictures == (Picture.WINDOWS,) and isinstance(spec.pictures[0], Picture)


def test_the_registered_models_declare_what_they_draw_and_log():
    assert MODEL_REGISTRY["fbsd"].pictures == (Picture.STRIPS,)
    assert MODEL_REGISTRY["mmal"].pictures == (Picture.WINDOWS,)
    assert set(MODEL_REGISTRY["mmal"].step_stats) <= set(MODEL_REGISTRY["mmal"].extras)
    assert MODEL_REGISTRY["baseline"].pictures == ()


def test_a_heatmaps_picture_needs_its_titles():
    with pytest.raises(ConfigError, match="picture 'heatmaps' needs heatmap_titles"):
        _spec(pictures=("heatmaps",), extras=("heatmapN",))
