"""Who may change which user, and what every change of the user list must keep.

Pure: the user list and a proposed change in, the list after it (a
:class:`Decision`) or a :class:`Refused` out. The API's user routes and
``heartbeat passwd`` ask it; :class:`~heartbeat.server.auth.AuthService` asks
it when it applies a change, against the list as it is then (a password is
hashed in between, during which other changes may land), so the rules hold
however requests interleave on the reactor thread.

The rules (docs/USERS.md):

- an admin may create, change and delete any user; a user may change their
  own fields but not their admin flag; nobody else may change anyone;
- with no users at all (the unauthenticated mode) the caller is nobody and
  may do what an admin may: the first user switches logins on, so it must be
  an admin;
- a change never leaves a list that had an admin without one (the last admin
  can be neither deleted nor demoted);
- names and passwords follow :func:`name_problem` and :func:`password_problem`;
- a new password ends the user's other sessions; deleting a user ends all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from heartbeat.config.checks import USER_NAME
from heartbeat.config.server import UserConfig
from heartbeat.passwords import MAX_LENGTH, MIN_LENGTH

__all__ = [
    "Action",
    "Code",
    "CreateUser",
    "Decision",
    "DeleteUser",
    "Refused",
    "UpdateUser",
    "UserChange",
    "decide",
    "name_problem",
    "password_problem",
    "permit",
]

class Code(StrEnum):
    """Why a change is refused (the API's error codes)."""

    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    LAST_ADMIN = "last_admin"
    FIRST_USER_MUST_BE_ADMIN = "first_user_must_be_admin"
    INVALID = "invalid_body"


class Refused(Exception):
    """A change the policy does not allow: ``code`` for machines, the message for people."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class _Fields:
    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Checked :class:`UserConfig` fields (the API's body): laid over the defaults for a
    new user, over the user as they are when the change is decided for an update."""
    password: str | None = None
    """The new password in clear; the edge hashes it."""


class CreateUser(_Fields):
    __slots__ = ()
    action = Action.CREATE


class UpdateUser(_Fields):
    __slots__ = ()
    action = Action.UPDATE


@dataclass(frozen=True, slots=True)
class DeleteUser:
    name: str

    action = Action.DELETE

    @property
    def password(self) -> None:
        return None


UserChange = CreateUser | UpdateUser | DeleteUser


@dataclass(frozen=True, slots=True)
class Decision:
    """What an allowed change does."""

    name: str
    user: UserConfig | None
    """The user after the change (its password hash not yet set); None: deleted."""
    users: Mapping[str, UserConfig]
    """The whole user list after the change."""
    end_sessions: bool
    """Whether the user's sessions end (but the caller's own, for a new password)."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None."""
    if USER_NAME.fullmatch(name):
        return None
    return (f"{name!r} is not a user name (letters, digits, . _ @ -, up to 64, starting "
            f"with a letter or digit)")


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be set, or None."""
    if not password:
        return "an empty password is refused"
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password may have at most {MAX_LENGTH} characters"
    return None


def _is_admin(users: Mapping[str, UserConfig], actor: str | None) -> bool:
    if actor is None:  # nobody is logged in, which only the unauthenticated mode allows
        return not users
    user = users.get(actor)
    return user is not None and user.admin


def permit(users: Mapping[str, UserConfig], actor: str | None, action: Action,
           name: str | None) -> None:
    """Refused (forbidden) unless ``actor`` may ``action`` the user ``name`` at all.

    ``name`` may be None for a creation (the body naming it is not read yet).
    It is asked before the change itself is read, so a caller who may not change
    users learns nothing about what a change would have met.
    """
    if _is_admin(users, actor):
        return
    if action is Action.UPDATE:
        if actor is None or actor != name or actor not in users:
            raise Refused(Code.FORBIDDEN, "only an admin may change another user")
        return
    raise Refused(Code.FORBIDDEN, "only an admin may do this")


def _admins(users: Mapping[str, UserConfig]) -> list[str]:
    return [name for name, user in users.items() if user.admin]


def decide(users: Mapping[str, UserConfig], actor: str | None,
           change: UserChange) -> Decision:
    """The user list after ``actor`` makes ``change`` to ``users``, or Refused."""
    name = change.name
    permit(users, actor, change.action, name)
    current = users.get(name)
    if isinstance(change, CreateUser):
        if current is not None:
            raise Refused(Code.EXISTS, f"there is already a user named {name!r}")
        problem = name_problem(name)
        if problem is not None:
            raise Refused(Code.INVALID, problem)
    elif current is None:
        raise Refused(Code.NOT_FOUND, f"no user named {name!r}")
    if change.password is not None:
        problem = password_problem(change.password)
        if problem is not None:
            raise Refused(Code.INVALID, problem)
    after = dict(users)
    user: UserConfig | None
    if isinstance(change, DeleteUser):
        del after[name]
        user = None
    else:
        if "password" in change.fields:  # a hash from the edge, never a field of the change
            raise ValueError("a new password goes in the change's password, not its fields")
        user = dataclasses.replace(current or UserConfig(), **change.fields)
        if (current is not None and user.admin != current.admin
                and not _is_admin(users, actor)):
            raise Refused(Code.FORBIDDEN, "only an admin may change the admin flag")
        after[name] = user
    if not _admins(after) and (_admins(users) or not users):
        if not users:
            raise Refused(Code.FIRST_USER_MUST_BE_ADMIN,
                          "the first user switches authentication on: make it an admin")
        raise Refused(Code.LAST_ADMIN, f"{name!r} is the last admin")
    return Decision(name, user, after,
                    end_sessions=user is None or change.password is not None)
