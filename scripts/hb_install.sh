#!/bin/sh
# Install or upgrade heartbeat into a virtualenv (the agent's update_command runs this on UPD).
#
#   hb_install.sh [--venv DIR] [--source SRC] [--version X] [--restart UNIT | --exit-agent]
#                 [--python PY]
#
#   --venv DIR      the virtualenv (created if missing); default /opt/heartbeat
#   --source SRC    a source directory or archive, or a pip requirement (e.g. a git URL);
#                   default: the checkout this script lives in
#   --version X     with a requirement name as SRC, install exactly X (also taken from
#                   $HEARTBEAT_VERSION, which the agent sets from the server's UPD)
#   --restart UNIT  afterwards, restart this systemd unit a few seconds later (outside the
#                   agent's own cgroup, so the agent can still answer the server first);
#                   needs the right to run systemctl (root)
#   --exit-agent    afterwards, stop the agent that runs this script (SIGTERM 5 s later,
#                   once it has answered the server) so that its supervisor starts the
#                   new version: for an agent running as its own user under the shipped
#                   unit (Restart=always), which may not call systemctl
#   --python PY     interpreter for a new venv; default python3 (3.11 or newer)
#
# Exit 0 and the installed version on stdout when done; non-zero with a message otherwise,
# also when a version was asked for (--version, $HEARTBEAT_VERSION) and another one got
# installed (e.g. SRC is a checkout of another version).
set -eu

venv=/opt/heartbeat
here=$(cd "$(dirname "$0")/.." && pwd)
source=$here
version=${HEARTBEAT_VERSION:-}
restart=
exit_agent=
python=python3

die() { echo "hb_install: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --venv) venv=${2:?--venv needs a directory}; shift 2 ;;
        --source) source=${2:?--source needs a value}; shift 2 ;;
        --version) version=${2:?--version needs a value}; shift 2 ;;
        --restart) restart=${2:?--restart needs a unit}; shift 2 ;;
        --exit-agent) exit_agent=$PPID; shift ;;
        --python) python=${2:?--python needs an interpreter}; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

if [ ! -x "$venv/bin/python" ]; then
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$python is older than 3.11 (heartbeat needs 3.11+); use --python"
    "$python" -m venv "$venv" || die "cannot create the venv $venv (python3-venv installed?)"
fi

target=$source
if [ -n "$version" ] && [ ! -e "$source" ] && ! printf %s "$source" | grep -q '[/:@=<>]'; then
    target="$source==$version"
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$target" \
    || die "pip could not install $target into $venv"

# Write Twisted's plugin cache now, as the installing user, so twistd need not.
"$venv/bin/python" -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'

installed=$("$venv/bin/python" -c 'import heartbeat; print(heartbeat.__version__)')
echo "heartbeat $installed installed in $venv"

if [ -n "$restart" ]; then
    if command -v systemd-run >/dev/null 2>&1; then
        systemd-run --quiet --on-active=5 --unit="hb-restart-$$" systemctl restart "$restart" \
            || die "could not schedule the restart of $restart"
    else
        systemctl --no-block restart "$restart" || die "could not restart $restart"
    fi
    echo "restart of $restart scheduled"
fi
if [ -n "$exit_agent" ]; then
    # Detached from our pipes, so the agent sees this script end and answers at once.
    (sleep 5; kill -TERM "$exit_agent") </dev/null >/dev/null 2>&1 &
    echo "agent (pid $exit_agent) stops in 5 s to start the new version"
fi

# An UPD that asked for a version is answered rc 0 only if that version is what now runs.
if [ -n "$version" ] && [ "$installed" != "$version" ]; then
    die "installed $installed, not the requested version $version"
fi
