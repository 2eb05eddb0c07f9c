"""describe_error: a message as it is; an error without one named by its type and where it was raised, also
after crossing into the parent of a fresh process (whose pickle drops the traceback). Never empty."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from tasks.runtime.error_text import describe_error, keep_description
from tasks.runtime.fresh_process import run_in_fresh_process

HERE = "tests/runtime/test_error_text.py"


def stop_without_a_message(argument: Any = None, report: Any = None) -> None:
    raise StopIteration


def fail_with_an_error_that_does_not_pickle(argument: Any = None, report: Any = None) -> None:
    error = ValueError("bad input in the child")
    error.callback = lambda: None  # a lambda does not pickle
    raise error


def raising_line(function: Any) -> int:
    """The line of ``function``'s raise statement (its body's first line)."""
    return function.__code__.co_firstlineno + 1


def caught(function: Any) -> BaseException:
    try:
        function()
    except BaseException as error:  # noqa: BLE001 - the test looks at whatever it raised
        return error
    raise AssertionError(f"{function.__name__} raised nothing")


def test_a_message_is_the_description_and_named_adds_the_type() -> None:
    assert describe_error(ValueError("images/x.png: truncated")) == "images/x.png: truncated"
    assert describe_error(ValueError("images/x.png: truncated"), named=True) == "ValueError: images/x.png: truncated"


def test_an_error_without_a_message_names_its_type_and_the_raising_line() -> None:
    expected = (f"StopIteration with no message, raised at {HERE}:{raising_line(stop_without_a_message)} in "
                "stop_without_a_message")
    assert describe_error(caught(stop_without_a_message)) == expected
    assert describe_error(caught(stop_without_a_message), named=True) == expected


def test_a_blank_message_counts_as_none_and_the_error_it_was_raised_from_is_named() -> None:
    def handle() -> None:
        try:
            {}["epoch"]
        except KeyError:
            raise RuntimeError("  \n")  # noqa: B904 - raised while handling the KeyError, which it must name

    text = describe_error(caught(handle))
    assert text.startswith(f"RuntimeError with no message, raised at {HERE}:")
    assert text.endswith(" in handle (while handling KeyError: 'epoch')")


def test_an_error_never_raised_still_has_a_description() -> None:
    assert describe_error(RuntimeError()) == "RuntimeError with no message, no traceback"


def test_the_description_of_a_message_less_error_survives_its_pickle() -> None:
    error = caught(stop_without_a_message)
    keep_description(error)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.__traceback__ is None
    assert describe_error(copy) == describe_error(error)
    assert f"{HERE}:{raising_line(stop_without_a_message)}" in describe_error(copy)


def test_a_message_less_error_of_a_fresh_process_names_the_childs_raising_line() -> None:
    with pytest.raises(StopIteration) as raised:
        run_in_fresh_process(stop_without_a_message, None)
    assert describe_error(raised.value) == (f"StopIteration with no message, raised at {HERE}:"
                                            f"{raising_line(stop_without_a_message)} in stop_without_a_message")


def test_an_error_that_does_not_pickle_comes_back_as_its_text() -> None:
    with pytest.raises(RuntimeError, match="^ValueError: bad input in the child$"):
        run_in_fresh_process(fail_with_an_error_that_does_not_pickle, None)
