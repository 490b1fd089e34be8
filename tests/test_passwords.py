"""Password hashes and the `heartbeat passwd` command."""

from __future__ import annotations

import hashlib
import hmac
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import check_password_hash, generate_password_hash

from heartbeat import cli, passwords
from heartbeat.passwords import (
    ITERATIONS,
    MIN_ITERATIONS,
    PasswordHash,
    hash_password,
    parse_hash,
    verify_password,
)

FAST = 1000


def test_hash_layout_and_cost() -> None:
    """A hash reads pbkdf2:sha256:<iterations>$<16-char salt>$<64 hex>, 600k by default."""
    encoded = hash_password("s3cret")
    parsed = parse_hash(encoded)
    assert encoded == f"pbkdf2:sha256:{parsed.iterations}${parsed.salt}${parsed.digest}"
    assert (parsed.iterations, ITERATIONS, MIN_ITERATIONS) == (600_000, 600_000, 600_000)
    assert len(parsed.salt) == 16 and parsed.salt.isalnum()
    expected = hashlib.pbkdf2_hmac("sha256", b"s3cret", parsed.salt.encode(), 600_000).hex()
    assert parsed.digest == expected


def test_verify_matches_only_the_password() -> None:
    """The right password verifies; a wrong one, a prefix or an empty one does not."""
    encoded = hash_password("correct horse", iterations=FAST)
    assert [verify_password(p, encoded) for p in ("correct horse", "correct hors", "", "x")] == [
        True, False, False, False]


def test_salt_is_random_per_hash() -> None:
    """The same password hashes differently each time (per-user random salt)."""
    hashes = {hash_password("same", iterations=FAST) for _ in range(20)}
    assert len(hashes) == 20
    assert len({parse_hash(h, 1).salt for h in hashes}) == 20


def test_compare_is_constant_time(monkeypatch: Any) -> None:
    """The digests are compared with hmac.compare_digest."""
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    encoded = hash_password("pw", iterations=FAST, salt="abcdefgh12345678")
    assert verify_password("pw", encoded)
    digest = parse_hash(encoded, 1).digest
    assert calls == [(digest, digest)]


def test_interoperates_with_werkzeug() -> None:
    """Werkzeug's pbkdf2:sha256 hashes verify here, and ours there."""
    theirs = generate_password_hash("shared", method=f"pbkdf2:sha256:{FAST}")
    assert verify_password("shared", theirs)
    assert check_password_hash(hash_password("shared", iterations=FAST), "shared")


@pytest.mark.parametrize(("encoded", "problem"), [
    ("plaintext", "expected pbkdf2:sha256:<iterations>$<salt>$<hash> (make one with "
                  "`heartbeat passwd NAME`)"),
    ("pbkdf2:sha1:600000$salt$" + "0" * 64, "unsupported method 'pbkdf2:sha1:600000': "
                                            "only pbkdf2:sha256 is accepted"),
    ("pbkdf2:sha256:lots$salt$" + "0" * 64, "iterations 'lots' is not a number"),
    ("pbkdf2:sha256:1000$salt$" + "0" * 64, "1000 iterations is below the minimum of 600000"),
    ("pbkdf2:sha256:600000$$" + "0" * 64, "empty salt or a stray '$'"),
    ("pbkdf2:sha256:600000$salt$abc", "the hash must be 64 hex digits"),
    ("pbkdf2:sha256:600000$salt$" + "g" * 64, "the hash must be 64 hex digits"),
])
def test_malformed_hashes_are_explained(encoded: str, problem: str) -> None:
    """parse_hash names what is wrong; verify_password treats it as no match."""
    with pytest.raises(ValueError) as caught:
        parse_hash(encoded)
    assert str(caught.value) == problem
    assert verify_password("anything", encoded) is False


def test_str_of_password_hash_round_trips() -> None:
    """PasswordHash prints the stored form it was parsed from."""
    encoded = hash_password("pw", iterations=MIN_ITERATIONS, salt="SALTsalt12345678")
    assert str(parse_hash(encoded)) == encoded
    assert parse_hash(encoded) == PasswordHash(600_000, "SALTsalt12345678",
                                               parse_hash(encoded).digest)


def test_passwd_prompts_twice(monkeypatch: Any, capsys: Any) -> None:
    """`heartbeat passwd NAME` asks twice without echo and prints the line to paste."""
    prompts: list[str] = []
    answers = iter(["hunter22", "hunter22"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: prompts.append(prompt)
                        or next(answers))
    assert cli.main(["passwd", "alice"]) == 0
    out, err = capsys.readouterr()
    assert prompts == ["Password for alice: ", "Again: "]
    assert err == "Paste under users.alice in the server config:\n"
    key, line = out.rstrip("\n").split(": ", 1)
    assert key == "password"
    assert parse_hash(line).iterations == 600_000 and verify_password("hunter22", line)


def test_passwd_refuses_a_mismatch(monkeypatch: Any, capsys: Any) -> None:
    """Two different answers write nothing and exit 1."""
    answers = iter(["one-password", "another-one"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: next(answers))
    assert cli.main(["passwd", "alice"]) == 1
    assert capsys.readouterr() == ("", "heartbeat passwd: the passwords differ; nothing written\n")


def test_passwd_stdin_console_script(tmp_path: Path) -> None:
    """The installed console script reads --stdin and prints a verifiable hash."""
    script = Path(sys.executable).with_name("heartbeat")
    result = subprocess.run([str(script), "passwd", "bob", "--stdin"], input="from-a-pipe\n",
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().removeprefix("password: ")
    assert verify_password("from-a-pipe", line)
    empty = subprocess.run([str(script), "passwd", "bob", "--stdin"], input="\n",
                           capture_output=True, text=True, timeout=30, check=False)
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        1, "", "heartbeat passwd: an empty password is refused; nothing written\n")


def test_passwd_stdin_in_process(monkeypatch: Any, capsys: Any) -> None:
    """--stdin takes the first line only, without its newline."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-from-stdin\r\nignored\n"))
    assert cli.main(["passwd", "carol", "--stdin"]) == 0
    line = capsys.readouterr().out.strip().removeprefix("password: ")
    assert verify_password("pw-from-stdin", line)


def test_passwd_refuses_what_the_api_refuses(monkeypatch: Any, capsys: Any) -> None:
    """A password shorter than the API's minimum, or a name the config refuses, gets no hash."""
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: "seven77")
    assert cli.main(["passwd", "alice"]) == 1
    assert capsys.readouterr() == ("", "heartbeat passwd: a password needs at least 8 "
                                   "characters; nothing written\n")
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: "long-enough")
    assert cli.main(["passwd", "bad name"]) == 2
    assert capsys.readouterr() == ("", "heartbeat passwd: 'bad name' is not a user name "
                                   "(letters, digits, . _ @ -, up to 64, starting with a "
                                   "letter or digit)\n")
    assert cli.main(["passwd", "alice.b"]) == 0
