"""The ``error`` tag's rules one at a time, each on the smallest message that shows it.

README (*Privacy*, and the ``error`` row of the client tags): the tag is ``Class: message``,
never empty; the message is untrusted text, and wherever it holds something URL-like the rules of
``http.url`` apply: user info dropped (``scheme://user:pass@host``, ``//user@host`` and
``user:pass@host`` without a scheme), URL fragments dropped, the value of every ``name=value``
pair with a secret-looking name masked, in a query string or not. Response errors carry status
and reason only. The message is cut at 1,000 characters (a word cut in two is dropped whole) and
control characters become spaces. The tracer's ``ignored_exceptions`` (a list of exception
classes, or None for none) are never tagged.

``tests/test_error_values.py`` checks every aiohttp exception and real failures through
sessions; here each rule, and each character a rule stops at, is named once, so that loosening
any one fails a test that says which.
"""

from __future__ import annotations

import pytest
from aiohttp import ClientResponseError, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aiozipkin_client.parsers import ERROR_MESSAGE_LIMIT, ErrorTagging, error_value


def message(text: str) -> str:
    """What the tag keeps of ``text`` as an exception's message."""
    value = error_value(RuntimeError(text))
    assert value.startswith("RuntimeError: "), value
    return value.removeprefix("RuntimeError: ")


# -- user info ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the authority ends at "/", "?" and "#": an "@" after them is not user info
        ("https://h.example/a@b", "https://h.example/a@b"),
        ("https://h.example?from=a@b.example", "https://h.example?from=a@b.example"),
        ("https://h.example#x@y.example and more", "https://h.example and more"),
        # nor is an "@" after a blank, a quote or an angle bracket
        ("see //h.example or ask bob@corp.example", None),
        ("'//h.example'bob@corp.example", None),
        ('"//h.example"bob@corp.example', None),
        ("<//h.example>bob@corp.example", None),
        ("`//h.example`bob@corp.example", None),
        # an e-mail address is no user info: it has no password
        ("write to bob@corp.example", None),
        # without a scheme, "host:port" then a path: the "@" in the path is no user info either
        ("cannot reach db.example:5432/orders@v2", None),
    ],
)
def test_user_info_ends_where_the_authority_ends(text: str, expected: str | None) -> None:
    assert message(text) == (text if expected is None else expected)


# -- fragments ---------------------------------------------------------------------------------


def test_a_fragment_holding_another_hash_goes_whole() -> None:
    assert message("https://h.example/a#x#FRAGTOKEN") == "https://h.example/a"


# -- what closes a value or a fragment: the sentence around the URL keeps its punctuation ------


@pytest.mark.parametrize("closing", list(")]},.;:"))
def test_punctuation_after_a_value_or_a_fragment_is_kept(closing: str) -> None:
    text = f"(see https://h.example/a?token=T0KEN{closing} and https://h.example/b#FRAG{closing}"

    assert message(text) == (
        f"(see https://h.example/a?token=REDACTED{closing} and https://h.example/b{closing}"
    )


# -- name=value pairs ----------------------------------------------------------------------------


def test_a_pair_at_the_very_start_of_the_message() -> None:
    assert message("token=T0KEN expired") == "token=REDACTED expired"


def test_a_value_ends_at_an_ampersand_a_hash_or_a_blank() -> None:
    assert message("?token=T0KEN&page=2") == "?token=REDACTED&page=2"
    assert message("?token=T0KEN#section") == "?token=REDACTED#section"
    assert message("token=T0KEN\tpage=2") == "token=REDACTED page=2"


@pytest.mark.parametrize("stop", list("\"'<>`"))
def test_a_value_ends_at_a_quote_or_an_angle_bracket(stop: str) -> None:
    assert message(f"token=T0KEN{stop}rest") == f"token=REDACTED{stop}rest"


def test_pairs_after_a_value_holding_a_pair_are_masked_too() -> None:
    # The pair inside the masked value is skipped, not the end of the scan.
    assert message("?token=next=1&secret=S3CRET&page=2") == (
        "?token=REDACTED&secret=REDACTED&page=2"
    )


@pytest.mark.parametrize(
    "name",
    ["ticket.v2", "ticket-v2", "ticket_v2", "ticket~v2", "ticket+v2", "ticket%5Fv2", "Ticket.V2"],
)
def test_names_are_read_whole_with_their_punctuation(name: str) -> None:
    # Names are compared decoded ("+" is a space, %5F is "_"), and lowercase.
    sensitive = {"ticket.v2", "ticket-v2", "ticket_v2", "ticket~v2", "ticket v2"}

    value = error_value(ValueError(f"GET /x?{name}=T1CKET&v2=ok"), sensitive)

    assert value == f"ValueError: GET /x?{name}=REDACTED&v2=ok"


def test_part_of_a_name_is_not_a_name() -> None:
    sensitive = {"v2"}

    value = error_value(ValueError("GET /x?ticket.v2=a&ticket-v2=b&ticket~v2=c&v2=d"), sensitive)

    assert value == "ValueError: GET /x?ticket.v2=a&ticket-v2=b&ticket~v2=c&v2=REDACTED"


# -- control characters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "char",
    [
        "\x00",
        "\x01",
        "\t",
        "\n",
        "\x1b",
        "\x1f",
        "\x7f",
        "\x80",
        "\x85",
        "\x9f",
        "\u2028",
        "\u2029",
    ],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_controls_and_line_separators_become_spaces(char: str) -> None:
    # A space also ends a URL-like token: what follows is not part of it.
    assert message(f"one{char}two https://h.example/{char}alice:pw@x") == (
        "one two https://h.example/ x"
    )


@pytest.mark.parametrize(
    "char",
    [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_bidirectional_overrides_are_removed(char: str) -> None:
    assert message(f"evil{char}txt.exe") == "eviltxt.exe"


@pytest.mark.parametrize("char", ["\x20", "\xa0", "\u202f", "\u2065", "\u206a", "é"])
def test_printable_neighbours_of_those_ranges_are_kept(char: str) -> None:
    text = f"a{char}b"
    assert message(text) == (text if not char.isspace() else "a b")


# -- length --------------------------------------------------------------------------------------


def test_a_message_of_exactly_the_limit_is_kept_whole() -> None:
    words = "word " * ((ERROR_MESSAGE_LIMIT - 5) // 5) + "fifth"
    assert len(words) == ERROR_MESSAGE_LIMIT

    assert message(words) == words


def test_one_character_over_the_limit_cuts_the_last_word() -> None:
    words = "word " * ((ERROR_MESSAGE_LIMIT - 5) // 5) + "fifth!"

    assert message(words) == words.removesuffix(" fifth!") + " …"


def test_the_limit_is_a_thousand_characters() -> None:
    # README: "The message is cut at 1,000 characters".
    assert ERROR_MESSAGE_LIMIT == 1000


# -- response errors -----------------------------------------------------------------------------


def response_error(status: int, reason: str) -> ClientResponseError:
    url = URL("https://alice:pw@h.example/x?token=T0KEN")
    info = RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    return ClientResponseError(info, (), status=status, message=reason)


def test_a_response_error_with_a_status_and_no_reason() -> None:
    assert error_value(response_error(404, "")) == "ClientResponseError: 404, message=''"


def test_a_response_error_with_a_reason_and_no_status() -> None:
    assert error_value(response_error(0, "Gone")) == "ClientResponseError: 0, message='Gone'"


def test_a_response_error_with_neither_is_its_class() -> None:
    assert error_value(response_error(0, "")) == "ClientResponseError"


# -- ignored exceptions --------------------------------------------------------------------------


@pytest.mark.parametrize("ignored", [None, [], ()], ids=["None", "empty-list", "empty-tuple"])
def test_no_ignored_exceptions_tags_every_exception(ignored: object) -> None:
    errors = ErrorTagging.create(ignored)

    assert errors.value(ValueError("bad token=T0KEN")) == "ValueError: bad token=REDACTED"
    assert errors.value(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_ignored_exceptions_and_their_subclasses_are_not_tagged() -> None:
    errors = ErrorTagging.create([LookupError])

    assert errors.value(LookupError("x")) is None
    assert errors.value(KeyError("x")) is None
    assert errors.value(ValueError("x")) == "ValueError: x"


@pytest.mark.parametrize(
    ("ignored", "what"),
    [
        (5, "5"),
        (ValueError, "<class 'ValueError'>"),
        ("ValueError", "'ValueError'"),
        (b"x", "b'x'"),
    ],
)
def test_what_is_not_a_list_is_refused_with_a_message_saying_so(ignored: object, what: str) -> None:
    with pytest.raises(TypeError) as raised:
        ErrorTagging.create(ignored)

    assert str(raised.value) == (
        f"ignored_exceptions must be a list of exception classes, not {what}"
    )


@pytest.mark.parametrize(
    ("item", "what"), [("ValueError", "'ValueError'"), (42, "42"), (int, "<class 'int'>")]
)
def test_a_list_holding_what_is_not_an_exception_class_is_refused(item: object, what: str) -> None:
    with pytest.raises(TypeError) as raised:
        ErrorTagging.create([ValueError, item])

    assert str(raised.value) == f"ignored_exceptions must hold exception classes, not {what}"
