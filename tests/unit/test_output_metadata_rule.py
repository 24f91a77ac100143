"""The protocol's rule for a storlet's output metadata (no cluster).

tests/functional/test_output_metadata.py shows the engine enforcing it
against a hostile storlet, on the object server and the proxy.
"""

import pytest

from mlstorlets.sandbox.protocol import output_metadata_problem


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"Name": "José Ñúñez"},
        {"Face-Box": "1,2,3,4", "Storlet-Output-Length": "5"},
        {"K": "v" * 256},
        {"k" * 128: "v"},
        {"K%d" % i: "v" for i in range(90)},
        {"A-b.c_d~e": 'tab-free text: "quoted", 100%'},
    ],
)
def test_what_a_storlet_may_set(metadata):
    assert output_metadata_problem(metadata) is None


@pytest.mark.parametrize(
    "metadata, rule",
    [
        ({"X": "a\r\nSet-Cookie: x=1"}, "control character"),
        ({"X": "a\nb"}, "control character"),
        ({"X": "a\x00b"}, "control character"),
        ({"X": "a\tb"}, "control character"),
        ({"X": "a\x85b"}, "control character"),
        ({"X\r\nSet-Cookie": "1"}, "not an HTTP token"),
        ({"X Y": "1"}, "not an HTTP token"),
        ({"X:Y": "1"}, "not an HTTP token"),
        ({"Námé": "1"}, "not an HTTP token"),
        ({"": "1"}, "not an HTTP token"),
        ({"K": "v" * 257}, "over 256 bytes"),
        ({"K": "é" * 129}, "over 256 bytes"),
        ({"k" * 129: "v"}, "over 128 bytes"),
        ({"K%d" % i: "v" for i in range(91)}, "more than 90 metadata keys"),
        ({"K%d" % i: "v" * 250 for i in range(20)}, "over 4096 bytes in all"),
    ],
)
def test_what_a_storlet_may_not_set(metadata, rule):
    assert rule in output_metadata_problem(metadata)


def test_the_reason_never_carries_the_raw_bytes():
    reason = output_metadata_problem({"X\r\nSet-Cookie": "1"})
    assert "\r" not in reason and "\n" not in reason


def test_the_clusters_own_constraints_apply():
    assert output_metadata_problem({"K": "v" * 300}, value_length=512) is None
    assert "over 10 bytes" in output_metadata_problem({"K": "v" * 11}, value_length=10)


def test_a_refusals_reason_has_a_bound_of_its_own():
    assert output_metadata_problem({"Storlet-Error": "r" * 1000}) is None
    assert "over 4096 bytes" in output_metadata_problem({"Storlet-Error": "r" * 5000})
    assert "control character" in output_metadata_problem({"Storlet-Error": "a\nb"})


# HTTP's token characters (RFC 9110), and what a header value may not hold:
# the C0 and C1 controls and DEL.
TOKEN_CHARACTERS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CODE_POINTS = [chr(c) for c in range(0x800)] + ["\u2028", "\ufeff", "\U0001f600"]


def test_each_character_of_a_key_or_a_value_is_judged_by_itself():
    for character in CODE_POINTS:
        key_problem = output_metadata_problem({"a%sb" % character: "v"})
        assert (key_problem is None) == (character in TOKEN_CHARACTERS), repr(character)
        value_problem = output_metadata_problem({"k": "a%sb" % character})
        if ord(character) < 32 or 127 <= ord(character) < 160:
            assert "control character" in value_problem, repr(character)
        else:
            assert value_problem is None, repr(character)


def test_a_lone_surrogate_is_a_problem_not_an_error():
    # What JSON's "\\udc80" decodes to: no UTF-8 encodes it.
    assert "not text" in output_metadata_problem({"k": "a\udc80"})
    assert "not an HTTP token" in output_metadata_problem({"a\udc80": "v"})
