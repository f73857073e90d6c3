"""config/released.yaml: every released checkpoint is well formed and names what exists here
(methods, archs, variants, table columns, catalogue runs, other entries). No network."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from pixmim import registry
from pixmim.fetch import openmmlab_hash
from pixmim.workflow import load_config

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "config" / "released.yaml"

FIELDS = {"source", "checksum", "format", "kind", "pretrained", "method", "variant", "arch",
          "epochs", "published", "cite"}
KINDS = {"pretrained", "finetuned", "linear_probe"}
# Each format's files as its authors publish them (the source's host and path prefix).
SOURCES = {
    "openmmlab": "https://download.openmmlab.com/",
    "mae": "https://dl.fbaipublicfiles.com/mae/",
    "long_seq_mae": "https://dl.fbaipublicfiles.com/long_seq_mae/",
    "convmae": "https://drive.google.com/file/d/",
    "timm": "hf-hub:timm/",
}
# Formats that hold one method's model only.
FORMAT_METHOD = {"convmae": "convmae", "long_seq_mae": "lsmae"}
# The stage whose output a fine-tuned / probe checkpoint is (what the calibration evaluates).
KIND_STAGE = {"pretrained": "pretrain", "finetuned": "finetune", "linear_probe": "linear_probe"}
NAME = re.compile(r"[a-z0-9_]+")
CHECKSUM = re.compile(r"sha256:(?:[0-9a-f]{64}|[0-9a-f]{8})|md5:[0-9a-f]{6,32}")
# A fact's source: a repository at the commit read, or timm at the version we pin.
CITE = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{12}\b|timm (\d+\.\d+\.\d+) \(requirements\.lock\)")


class _UniqueKeys(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {twice}",
                                                    node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse(text: str) -> dict:
    return yaml.load(text, Loader=_UniqueKeys)


@cache
def released() -> dict[str, dict]:
    return parse(RELEASED.read_text())["checkpoints"]


@cache
def catalogue() -> dict:
    """The merged default config (catalogue + config.yaml), read once (read-only here)."""
    return load_config()


ENTRIES = sorted(released())


def test_the_file_parses_with_unique_names_and_its_two_top_level_keys():
    doc = parse(RELEASED.read_text())
    assert list(doc) == ["checkpoints", "tables"]  # the releases, and the calibration table
    # the recipe tier, and the evaluation tier's fine-tuned classifiers and probes
    assert list(doc["tables"]) == ["tablecal", "tablecalft", "tablecallin"]
    assert ENTRIES and all(NAME.fullmatch(n) for n in ENTRIES), ENTRIES
    with pytest.raises(yaml.constructor.ConstructorError, match="given twice"):
        parse("checkpoints:\n  a: {}\n  a: {}\n")


def test_the_evaluation_tier_has_every_released_classifier_and_probe_of_the_vit_family():
    """Each fine-tuned / probe file whose layout the plain-ViT family converts is a row of
    its table (ConvMAE's waits for its family's formats), with its own kind's columns."""
    from pixmim.families.vit.formats import FORMATS

    tables = parse(RELEASED.read_text())["tables"]
    for table, kind in (("tablecalft", "finetuned"), ("tablecallin", "linear_probe")):
        rows = [r["run"] for r in tables[table]["rows"]]
        want = sorted(n for n, e in released().items()
                      if e["kind"] == kind and e["format"] in FORMATS)
        assert sorted(rows) == want, table
        assert tables[table]["reference"] == "published"


def test_every_format_and_kind_has_an_entry():
    """One released file per layout and per kind at least: what the conversions and both
    calibration tiers are proven on."""
    entries = released().values()
    assert {e["format"] for e in entries} == set(SOURCES)
    assert {e["kind"] for e in entries} == KINDS


@pytest.mark.parametrize("name", ENTRIES)
def test_an_entry_has_the_fields_with_allowed_values(name):
    e = released()[name]
    assert set(e) == FIELDS, sorted(set(e) ^ FIELDS)
    assert e["format"] in SOURCES and e["kind"] in KINDS
    assert isinstance(e["epochs"], int) and not isinstance(e["epochs"], bool) and e["epochs"] > 0
    assert isinstance(e["published"], dict)
    for col, value in e["published"].items():
        assert isinstance(value, int | float) and 0 < value <= 100, (col, value)
    assert isinstance(e["cite"], str) and CITE.search(e["cite"]), e["cite"]


@pytest.mark.parametrize("name", ENTRIES)
def test_method_arch_variant_and_columns_are_ours(name):
    e, config = released()[name], catalogue()
    methods = registry.methods()
    assert e["method"] in methods, (e["method"], sorted(methods))
    assert e["arch"] in methods[e["method"]].archs, (e["arch"], sorted(methods[e["method"]].archs))
    assert e["variant"] in config["variants"], e["variant"]
    assert FORMAT_METHOD.get(e["format"], e["method"]) == e["method"]
    columns = registry.columns()
    assert set(e["published"]) <= set(columns), sorted(set(e["published"]) - set(columns))


@pytest.mark.parametrize("name", ENTRIES)
def test_its_format_and_kind_are_ones_its_family_converts(name):
    """The method's encoder family's formats module has the entry's layout and kind (a
    format named here but not there would stop the import job, at paper scale)."""
    from pixmim import families

    e = released()[name]
    fmt = families.formats_of(e["method"])
    assert e["format"] in fmt.FORMATS, (e["format"], fmt.FORMATS)
    assert e["kind"] in fmt.KINDS, (e["kind"], fmt.KINDS)


@pytest.mark.parametrize("name", ENTRIES)
def test_published_numbers_are_of_what_the_file_is(name):
    """A pretrained file's numbers come from the stages run on a pretraining (ft, lin, ...), a
    fine-tuned or probe file's from its own stage or the ones run on its output (in_c, ...)."""
    e, stages = released()[name], registry.stages()
    made_by = KIND_STAGE[e["kind"]]
    allowed = {s for s, spec in stages.items() if spec.consumes == made_by}
    if e["kind"] != "pretrained":
        allowed.add(made_by)
    columns = registry.columns()
    assert {columns[c].stage for c in e["published"]} <= allowed, (e["published"], allowed)


@pytest.mark.parametrize("name", ENTRIES)
def test_an_entry_stands_for_a_run_of_the_catalogue(name):
    e, config = released()[name], catalogue()
    runs = [r for r, run in config["runs"].items()
            if (run["method"], run["variant"], run["epochs"]) == (e["method"], e["variant"],
                                                                  e["epochs"])
            and run.get("arch", config["default_archs"][run["method"]]) == e["arch"]
            and run.get("dataset") is None]
    assert runs, f"{name}: no catalogue run of {e['method']}/{e['variant']}/{e['arch']}/" \
                 f"{e['epochs']}e"


@pytest.mark.parametrize("name", ENTRIES)
def test_source_and_checksum_follow_the_format(name):
    e = released()[name]
    assert e["source"].startswith(SOURCES[e["format"]]), (e["format"], e["source"])
    checksum = e["checksum"]
    assert checksum is None or CHECKSUM.fullmatch(checksum), checksum
    if e["format"] == "openmmlab":
        # OpenMMLab names a weight file `<name>-<first 8 hex of its sha256>.pth`
        suffix = openmmlab_hash(e["source"])
        assert suffix is not None and checksum == f"sha256:{suffix}", (e["source"], checksum)
    else:  # an 8-digit sha256 prefix is OpenMMLab's convention only
        assert not re.fullmatch(r"sha256:[0-9a-f]{8}", checksum or ""), checksum


@pytest.mark.parametrize("name", ENTRIES)
def test_a_trained_entry_names_the_pretrained_entry_it_came_from(name):
    e, table = released()[name], released()
    if e["kind"] == "pretrained":
        assert e["pretrained"] is None
        return
    if e["pretrained"] is None:
        return
    assert e["pretrained"] in table, e["pretrained"]
    parent = table[e["pretrained"]]
    assert parent["kind"] == "pretrained", parent["kind"]
    same = ("method", "variant", "arch", "epochs")
    assert [parent[k] for k in same] == [e[k] for k in same], e["pretrained"]


def test_timm_is_cited_at_the_version_we_pin():
    pinned = re.search(r"^timm==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)
    assert pinned
    for name, e in released().items():
        if e["format"] == "timm":
            assert CITE.search(e["cite"]).group(1) == pinned.group(1), name
