"""YAML option groups -> dataclasses: each bad mapping stops with one line naming the key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lit_reason.utils.config_dataclass import config_dict, parse_config


@dataclass
class Knobs:
    rank: int = 4
    scale: float | None = None
    names: list[str] | None = None
    on: bool = False


def test_a_mapping_becomes_the_dataclass_and_back():
    assert parse_config(Knobs, None, "model.knobs") is None
    same = Knobs(rank=2)
    assert parse_config(Knobs, same, "model.knobs") is same
    assert parse_config(Knobs, {"rank": 8, "scale": 2, "names": ["q_proj"]}, "model.knobs") == Knobs(8, 2, ["q_proj"])
    assert config_dict(Knobs, {"on": True}, "model.knobs") == {"rank": 4, "scale": None, "names": None, "on": True}


def test_unknown_key_is_one_line_naming_it_and_the_known_keys():
    with pytest.raises(ValueError) as err:
        parse_config(Knobs, {"rank": 8, "rnak": 8, "bogus": 1}, "model.knobs")
    assert str(err.value) == "model.knobs: unknown key(s) ['bogus', 'rnak']; known keys: ['names', 'on', 'rank', 'scale']"


@pytest.mark.parametrize("value, line", [
    ({"rank": "8"}, "model.knobs.rank must be int (got '8' of type str)"),
    ({"rank": True}, "model.knobs.rank must be int (got True of type bool)"),
    ({"scale": "2.0"}, "model.knobs.scale must be float | None (got '2.0' of type str)"),
    ({"names": "q_proj"}, "model.knobs.names must be list[str] | None (got 'q_proj' of type str)"),
    ({"names": ["q_proj", 3]}, "model.knobs.names must be list[str] | None (got ['q_proj', 3] of type list)"),
    ({"on": 1}, "model.knobs.on must be bool (got 1 of type int)"),
])
def test_wrong_field_type_is_one_line(value, line):
    with pytest.raises(ValueError) as err:
        parse_config(Knobs, value, "model.knobs")
    assert str(err.value) == line


def test_a_value_that_is_no_mapping_is_one_line():
    with pytest.raises(ValueError) as err:
        parse_config(Knobs, 16, "model.knobs")
    assert str(err.value) == "model.knobs must be a mapping of ['rank', 'scale', 'names', 'on'] or null (got 16)"


def test_the_real_option_groups_use_it():
    from lit_reason.models.lora import LoraSettings
    from lit_reason.rollout.correction import RolloutCorrection
    from lit_reason.rollout.vllm_engine import VLLMOptions

    with pytest.raises(ValueError, match=r"^model.lora.r must be int \(got '16' of type str\)$"):
        LoraSettings.parse({"r": "16"})
    with pytest.raises(ValueError, match=r"^model.lora: unknown key\(s\) \['rank'\]"):
        LoraSettings.parse({"rank": 16})
    with pytest.raises(ValueError, match=r"^model.vllm.sync_every must be int \(got '2' of type str\)$"):
        parse_config(VLLMOptions, {"sync_every": "2"}, "model.vllm")
    assert parse_config(RolloutCorrection, {"cap": 3}, "model.rollout_correction") == RolloutCorrection(cap=3)
