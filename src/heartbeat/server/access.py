"""Users and per-host roles: who may see and do what on which host.

The configuration gives the starting point (``users:``, ``default_owner`` and
each host's ``owner``/``managers``/``monitors``); changes made through the API
lie over it and win until they are reset. Pure code: the edge persists the
changes and restores them at start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from heartbeat.config.checks import USER_NAME
from heartbeat.config.server import HostConfig, UserConfig

__all__ = [
    "USER_NAME",
    "Directory",
    "HostAccess",
    "Role",
    "Roles",
    "Viewer",
    "roles_json",
    "user_json",
]

class Role(IntEnum):
    """What a user may do on one host; each role includes the ones below it."""

    MONITOR = 1  # view status, plugin data, alerts, messages
    MANAGER = 2  # + queue commands, trigger DNS, queue upgrades
    OWNER = 3  # + drop the host, transfer ownership, change access

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class HostAccess:
    """A host's owner, managers and monitors, and where that list came from."""

    owner: str | None = None
    managers: tuple[str, ...] = ()
    monitors: tuple[str, ...] = ()
    source: str = "config"  # "config" or "api"

    def role_of(self, name: str) -> Role | None:
        if name == self.owner:
            return Role.OWNER
        if name in self.managers:
            return Role.MANAGER
        if name in self.monitors:
            return Role.MONITOR
        return None

    def names(self) -> set[str]:
        return {n for n in (self.owner, *self.managers, *self.monitors) if n is not None}

    def to_json(self) -> dict[str, Any]:
        return {"owner": self.owner, "managers": list(self.managers),
                "monitors": list(self.monitors), "source": self.source}


Roles = tuple[Role | None, dict[str, Role | None]]
"""A user's role on every host (:meth:`Directory.roles`): the role on any host not
named, and the hosts where it differs."""


def roles_json(roles: Roles) -> dict[str, Any]:
    """``default_role`` and ``roles`` as the API shows them (docs/HTTP_API.md)."""
    default, differs = roles
    return {"default_role": None if default is None else default.label,
            "roles": {host: None if role is None else role.label
                      for host, role in differs.items()}}


def user_json(name: str, user: UserConfig) -> dict[str, Any]:
    """A user as the API shows it: every field but the password hash."""
    body = {"name": name, **dataclasses.asdict(user)}
    body["has_password"] = body.pop("password") is not None
    return body


class Directory:
    """Every user and every host's access list: the config overlaid by API changes."""

    def __init__(
        self,
        users: Mapping[str, UserConfig],
        hosts: Mapping[str, HostConfig],
        default_owner: str | None = None,
    ) -> None:
        self._config_users = dict(users)
        self._config_hosts = hosts
        self._configured_owner = default_owner
        self._user_changes: dict[str, UserConfig | None] = {}
        self._access_changes: dict[str, HostAccess] = {}
        self._users: dict[str, UserConfig] = {}
        self._default_owner: str | None = None
        self._resolved: dict[str, HostAccess] = {}
        """access() per host: asked for every event of every feed client, changed rarely."""
        self._listed: dict[str, dict[str, Role]] | None = None
        """Each name's hosts in the lists in force and its role on each (made when first
        asked, again after a list changes): :meth:`roles` and :meth:`privileged` of a user
        in the size of their lists, not of the hosts listed (at 100,000 listed hosts a
        walk took 0.3-0.4 s, and every page asks both)."""
        self._admins: list[str] = []
        self._order: dict[str, int] = {}
        self._refresh()

    def _refresh(self) -> None:
        self._resolved.clear()
        users = dict(self._config_users)
        for name, change in self._user_changes.items():
            if change is None:
                users.pop(name, None)
            else:
                users[name] = change
        self._users = users
        self._admins = [name for name, user in users.items() if user.admin]
        self._order = {name: n for n, name in enumerate(users)}
        owner = self._configured_owner
        if owner not in users:
            owner = next((n for n, u in users.items() if u.admin), None)
        self._default_owner = owner

    # Users
    @property
    def enabled(self) -> bool:
        """Authentication is on as soon as one user exists."""
        return bool(self._users)

    @property
    def users(self) -> Mapping[str, UserConfig]:
        return self._users

    @property
    def default_owner(self) -> str | None:
        """``default_owner`` if it names a user, else the first admin."""
        return self._default_owner

    def user(self, name: str) -> UserConfig | None:
        return self._users.get(name)

    def admins(self) -> list[str]:
        return list(self._admins)

    def in_user_order(self, names: Iterable[str]) -> list[str]:
        """The users among ``names``, in the order of :attr:`users`, without a walk of them."""
        order = self._order
        return sorted({name for name in names if name in order}, key=order.__getitem__)

    def in_config(self, name: str) -> bool:
        """Whether the config names ``name`` (deleting them leaves a tombstone)."""
        return name in self._config_users

    def user_source(self, name: str) -> str:
        return "api" if name in self._user_changes else "config"

    def put_user(self, name: str, user: UserConfig) -> None:
        self._user_changes[name] = user
        self._refresh()

    def delete_user(self, name: str) -> bool:
        if name not in self._users:
            return False
        if name in self._config_users:
            self._user_changes[name] = None  # a tombstone hides the config's user
        else:
            del self._user_changes[name]
        self._refresh()
        return True

    # Hosts
    def access(self, host: str) -> HostAccess:
        """The access list in force: the API's if set, else the config's.

        An owner who is no longer a user hands the host to the default owner.
        """
        found = self._resolved.get(host)
        if found is not None:
            return found
        found = self._access_changes.get(host)
        if found is None:
            config = self._config_hosts.get(host)
            found = HostAccess(self._default_owner) if config is None else HostAccess(
                config.owner or self._default_owner, tuple(config.managers),
                tuple(config.monitors))
        if found.owner is not None and found.owner not in self._users:
            found = dataclasses.replace(found, owner=self._default_owner)
        if len(self._resolved) < 100_000:
            self._resolved[host] = found
        return found

    def set_access(self, host: str, access: HostAccess) -> HostAccess:
        access = dataclasses.replace(access, source="api")
        self._unlist(host)
        self._access_changes[host] = access
        self._resolved.pop(host, None)
        self._list(host)
        return access

    def reset_access(self, host: str) -> bool:
        """Forget the API's list for ``host``; the config's applies again."""
        self._resolved.pop(host, None)
        self._unlist(host)
        found = self._access_changes.pop(host, None) is not None
        self._list(host)
        return found

    def role(self, user: str, host: str) -> Role | None:
        """``user``'s role on ``host``: admins own every host; unknown users have none."""
        found = self._users.get(user)
        if found is None:
            return None
        if found.admin:
            return Role.OWNER
        return self.access(host).role_of(user)

    def roles(self, user: str, known: Callable[[str], bool]) -> Roles:
        """``user``'s role on every host, told in a size that follows the access lists,
        not the fleet: the role held on any host not named (``default``), and the hosts
        that ``known`` admits where the role differs (None: no role there).

        An admin owns every host and the default owner every host without an owner of
        its own; any other role comes from a host's list, in the config or the API's.
        Listing every host instead made ``/api/0/me`` of an admin 2 MB and 0.2 s of the
        reactor at 100,000 hosts, asked by every page.
        """
        found = self._users.get(user)
        if found is None:
            return None, {}
        if found.admin:
            return Role.OWNER, {}
        if user != self._default_owner:
            mine = self._listings().get(user, {})
            return None, {host: mine[host] for host in sorted(mine) if known(host)}
        listed = sorted(self._access_changes.keys() | self._config_hosts.keys())
        return Role.OWNER, {host: role for host in listed
                            if known(host) and (role := self.role(user, host)) is not Role.OWNER}

    def _listings(self) -> dict[str, dict[str, Role]]:
        """:attr:`_listed`, made if it is not."""
        if self._listed is None:
            self._listed = {}
            for host in self._access_changes.keys() | self._config_hosts.keys():
                self._list(host)
        return self._listed

    def _list_of(self, host: str) -> tuple[str | None, Iterable[str], Iterable[str]]:
        """``host``'s list in force as written (the API's, else the config's): owner,
        managers, monitors."""
        change = self._access_changes.get(host)
        if change is not None:
            return change.owner, change.managers, change.monitors
        config = self._config_hosts.get(host)
        if config is None:
            return None, (), ()
        return config.owner, config.managers, config.monitors

    def _list(self, host: str) -> None:
        """Add ``host``'s list in force to :attr:`_listed`, each name with the role
        ``HostAccess.role_of`` gives it."""
        listed = self._listed
        if listed is None:
            return
        owner, managers, monitors = self._list_of(host)
        for name in monitors:
            listed.setdefault(name, {})[host] = Role.MONITOR
        for name in managers:
            listed.setdefault(name, {})[host] = Role.MANAGER
        if owner is not None:
            listed.setdefault(owner, {})[host] = Role.OWNER

    def _unlist(self, host: str) -> None:
        listed = self._listed
        if listed is None:
            return
        owner, managers, monitors = self._list_of(host)
        for name in {owner, *managers, *monitors}:
            if name is not None and name in listed:
                listed[name].pop(host, None)
                if not listed[name]:
                    del listed[name]

    def privileged(self, user: str) -> bool:
        """Whether ``user`` is an admin, or owner or manager of some host (seen or not).

        The default owner owns every host without an owner of its own.
        """
        found = self._users.get(user)
        if found is None:
            return False
        if found.admin or user == self._default_owner:
            return True
        return any(role >= Role.MANAGER for role in self._listings().get(user, {}).values())

    def unknown_users(self, names: Iterable[str]) -> list[str]:
        return sorted({n for n in names if n not in self._users})

    # Persistence
    def user_change(self, name: str) -> tuple[bool, UserConfig | None]:
        """(whether the API changed ``name``, the change: the user or None if deleted)."""
        return name in self._user_changes, self._user_changes.get(name)

    def access_change(self, host: str) -> HostAccess | None:
        return self._access_changes.get(host)

    def restore(
        self, users: Mapping[str, UserConfig | None], access: Mapping[str, HostAccess]
    ) -> None:
        """Lay the stored API changes over the config after a restart."""
        self._user_changes.update(users)
        self._access_changes.update(
            {host: dataclasses.replace(a, source="api") for host, a in access.items()})
        self._listed = None
        self._refresh()

    def reload(
        self, users: Mapping[str, UserConfig | None], access: Mapping[str, HostAccess]
    ) -> None:
        """The stored API changes, whole, in place of those held: another server sharing
        the store changed users or access lists (docs/HA.md)."""
        self._user_changes.clear()
        self._access_changes.clear()
        self._resolved.clear()
        self.restore(users, access)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: a user, or nobody in the unauthenticated mode (allowed all)."""

    directory: Directory
    name: str | None = None
    via: str = "none"  # "none" (no users configured), "cookie", "bearer" or "key"
    session: str | None = None  # the session's key, when authenticated by one
    key_id: str | None = None  # the API key's id, when authenticated by one
    read_only: bool = False  # a read-only API key: no change of any kind
    restricted: bool = False  # a session that may only enrol the second factor it lacks

    @property
    def admin(self) -> bool:
        if self.name is None:
            return True
        user = self.directory.user(self.name)
        return user is not None and user.admin

    def role(self, host: str) -> Role | None:
        if self.name is None:
            return Role.OWNER
        return self.directory.role(self.name, host)

    def roles(self, known: Callable[[str], bool]) -> Roles:
        """:meth:`Directory.roles` of the viewer (nobody: the owner of every host)."""
        if self.name is None:
            return Role.OWNER, {}
        return self.directory.roles(self.name, known)

    def seen(self, known: Callable[[str], bool]) -> tuple[bool, set[str]]:
        """The hosts of ``known`` the viewer sees, from its roles (:meth:`roles`), not a
        walk of the fleet: (True, the hosts it does not see) when it sees every other
        host, as an admin or the default owner does, else (False, the hosts it sees)."""
        default, differs = self.roles(known)
        if default is None:
            return False, {host for host, role in differs.items() if role is not None}
        return True, {host for host, role in differs.items() if role is None}

    def visible(self, names: Sequence[str], known: Callable[[str], bool]) -> Sequence[str]:
        """Of ``names`` (the fleet's, sorted), those the viewer sees, in their order:
        ``names`` itself for whoever sees every host, else without asking each host."""
        all_but, found = self.seen(known)
        if not all_but:
            return sorted(found)
        return [name for name in names if name not in found] if found else names

    def sees(self, host: str) -> bool:
        return self.role(host) is not None

    def may(self, role: Role, host: str) -> bool:
        held = self.role(host)
        return held is not None and held >= role
