"""rollover.config.check.compose: libyaml's parser events under PyYAML's composer give the very
node tree the pure-Python loader gives (types, tags, values, lines), and whatever libyaml refuses
or cannot do safely is composed by the pure loader, with its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rollover.config import check

HERE = Path(__file__).parent
DOCUMENTS = [p.read_text() for p in sorted((HERE / "config_corpus").glob("*.yaml"))] + [
    (HERE.parent / "examples" / "rollover.yaml").read_text(),
    "a: &x [1, 2]\nb: *x\nc: !!str 3\nd: ~\ne: 2026-01-01\n",
    "- ? complex\n  : key\n- 'quoted'\n- |\n  block\n  text\n",
    "",
]

pytestmark = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")


def shape(node: yaml.Node | None) -> object:
    if node is None:
        return None
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.value, node.style, node.start_mark.line, node.start_mark.column)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, node.flow_style, node.start_mark.line, [shape(n) for n in node.value])
    assert isinstance(node, yaml.MappingNode)
    return (node.tag, node.flow_style, node.start_mark.line,
            [(shape(k), shape(v)) for k, v in node.value])


@pytest.mark.parametrize("text", DOCUMENTS)
def test_libyaml_events_compose_what_the_pure_loader_composes(text: str) -> None:
    fast = check._compose_libyaml(text)
    try:
        pure = yaml.compose(text, Loader=check.LimitedLoader)
    except yaml.YAMLError:
        assert fast is check._PURE  # refused by both: the pure loader's error is reported
        return
    assert isinstance(fast, yaml.Node | None)
    assert shape(fast) == shape(pure)


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,  # libyaml's own composer would overflow the C stack
    "[" * 65 + "]" * 65,
    "a: [1\n",
    "a: *nowhere\n",
    "a: 1\n---\nb: 2\n",
    "a: \x00\n",
])
def test_what_libyaml_refuses_the_pure_loader_refuses_in_its_words(text: str) -> None:
    assert check._compose_libyaml(text) is check._PURE
    with pytest.raises(yaml.YAMLError) as fast:
        check.compose(text)
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.compose(text, Loader=check.LimitedLoader)
    assert str(fast.value) == str(pure.value)
