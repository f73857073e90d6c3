"""The suite's own scheduling (tests/conftest.py): the longest modules, run first, exist."""

from types import SimpleNamespace

from tests.conftest import LONGEST_FIRST, ROOT, pytest_collection_modifyitems


def test_longest_first_names_existing_modules():
    """A renamed or moved module would silently drop back to collection order."""
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST), LONGEST_FIRST
    for path in LONGEST_FIRST:
        assert (ROOT / path).is_file(), f"tests/conftest.py LONGEST_FIRST: no module {path}"


def test_longest_modules_are_collected_first_and_the_rest_keep_their_order():
    ids = ["tests/a/test_x.py::t1", f"{LONGEST_FIRST[1]}::t1", "tests/b/test_y.py::t1",
           f"{LONGEST_FIRST[0]}::t1", "tests/a/test_x.py::t2", f"{LONGEST_FIRST[1]}::t2"]
    items = [SimpleNamespace(nodeid=i) for i in ids]
    pytest_collection_modifyitems(items)
    assert [i.nodeid for i in items] == [ids[3], ids[1], ids[5], ids[0], ids[2], ids[4]]
