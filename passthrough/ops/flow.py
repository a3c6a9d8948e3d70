"""Act, verify, and on any failure undo every change: the shape all operations share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from passthrough.errors import PassthroughError
from passthrough.ops.result import FAILED, ROLLED_BACK, SUCCEEDED, OperationResult
from passthrough.ops.sysfs import as_failure

logger = logging.getLogger(__name__)


def carry_out(
    result: OperationResult,
    *,
    act: Callable[[], None],
    undo: Callable[[], list[Callable[[], None]]],
    read_state: Callable[[], dict[str, Any]],
    doing: str,
) -> OperationResult:
    """Run ``act``; if it raises, run each undo step (all of them, even after one fails).

    The outcome is ``rolled_back`` only when the state read back afterwards equals
    ``state_before``; otherwise ``failed``, with what is left in ``state_after``.
    """
    try:
        act()
    except Exception as error:  # a refused write, a time limit, a bug: all leave the host to be put back
        if not isinstance(error, PassthroughError):
            logger.warning("%s interrupted", doing, exc_info=True)
        failure = as_failure(error, doing)
        result.error = failure.as_dict()
        problems = []
        for step in undo():
            try:
                step()
            except Exception as undo_error:
                problems.append(as_failure(undo_error, "Putting it back").message)
        result.state_after = read_state()
        if not problems and result.state_after == result.state_before:
            result.outcome = ROLLED_BACK
        else:
            result.outcome = FAILED
            result.error["rollback"] = (
                "The rollback did not restore the state from before: "
                + (" ".join(problems) if problems else "the host reads differently now.")
                + " See state_after for where each function was left."
            )
        return result
    result.state_after = read_state()
    result.outcome = SUCCEEDED
    return result
