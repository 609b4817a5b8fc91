"""Settings: defaults, STREAMGATE_* variables, flags, validation, --help."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from gateway.settings import Settings, from_args, from_env


def test_defaults_match_the_documented_product() -> None:
    s = Settings()
    assert (s.host, s.port, s.tick_interval, s.heartbeat) == ("0.0.0.0", 8080, 1.0, 15.0)


def test_environment_then_flags() -> None:
    env = {"STREAMGATE_PORT": "9000", "STREAMGATE_HEARTBEAT": "3", "STREAMGATE_TOPICS": "a, b"}
    assert from_env(env).port == 9000
    assert from_env(env).topics == ("a", "b")
    s = from_args(["--port", "9100", "--topic", "c"], env)
    assert (s.port, s.heartbeat, s.topics) == (9100, 3.0, ("c",))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMGATE_PORT": "eighty"}, "STREAMGATE_PORT"),
        ({"STREAMGATE_HEARTBEAT": "0"}, "heartbeat must be positive"),
        ({"STREAMGATE_SOURCES": "nonsense"}, "NAME=module:function"),
        ({"STREAMGATE_WRITE_DELAY": "-1"}, "write_delay"),
        ({"STREAMGATE_LOOP": "trio"}, "loop must be 'auto', 'asyncio' or 'uvloop'"),
        ({"STREAMGATE_TOPIC_TTL": "-1"}, "topic_ttl must not be negative"),
        ({"STREAMGATE_MAX_HISTORY_BYTES": "0"}, "max_history_bytes must be positive"),
        ({"STREAMGATE_LOG_FORMAT": "xml"}, "log_format must be 'text' or 'json'"),
        ({"STREAMGATE_METRICS": "maybe"}, "STREAMGATE_METRICS"),
        ({"STREAMGATE_METRICS_TOKEN": "two words"}, "metrics_token: no spaces"),
        ({"STREAMGATE_MAX_HISTORY_BYTES": "1000000"}, r"at least 16 x .* = 1064960"),
        (
            {"STREAMGATE_MAX_MESSAGE_BYTES": "1048576", "STREAMGATE_MAX_HISTORY_BYTES": "16777216"},
            "max_history_bytes must be at least",
        ),
    ],
)
def test_bad_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_env(env)


def test_history_limits_defaults_and_the_least_budget() -> None:
    s = Settings()
    assert (s.max_history_bytes, s.topic_ttl) == (256 << 20, 3600.0)
    least = 16 * (s.max_message_bytes + 1024)
    assert Settings(max_history_bytes=least).max_history_bytes == least
    assert from_args(["--max-history-bytes", "67108864", "--topic-ttl", "0"], {}).topic_ttl == 0


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_serve_help_documents_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for field in dataclasses.fields(Settings):
        assert "STREAMGATE_" + field.name.upper() in out, field.name


def test_bad_flag_value_exits_2_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--heartbeat", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "heartbeat must be positive" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("flag", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_the_event_loop_is_the_one_asked_for(flag: str, expected: str) -> None:
    """uvloop is a dependency, so 'auto' picks it; the log line names the loop that ran."""
    argv = ["serve", "--port", "0", "--host", "127.0.0.1", "--tick-interval", "0", "--loop", flag]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *argv],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"({expected} event loop)" in line, line
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "import resource\n"
        "from gateway.app import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "before, after = raise_open_files_limit()\n"
        "assert before == min(256, hard), before\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == after >= before\n"
        "print(after)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_access_control_settings_from_flags_and_environment() -> None:
    env = {
        "STREAMGATE_ANONYMOUS_SUBSCRIBE": "news, public.*",
        "STREAMGATE_TRUSTED_PROXIES": "10.0.0.0/8",
        "STREAMGATE_PUBLISH_RATE": "50",
    }
    s = from_env(env)
    assert s.anonymous_subscribe == ("news", "public.*")
    assert (s.trusted_proxies, s.publish_rate, s.max_connections_per_ip) == (
        ("10.0.0.0/8",),
        50.0,
        None,  # unset: the default follows whether access control is on
    )
    argv = ["--anonymous-subscribe", "a.*", "--anonymous-subscribe", "b"]
    argv += ["--trusted-proxies", "127.0.0.1", "--trusted-proxies", "::1"]
    argv += ["--max-connections-per-ip", "0", "--auth-url", "http://127.0.0.1:1/check"]
    s = from_args(argv, env)
    assert s.anonymous_subscribe == ("a.*", "b")
    assert s.trusted_proxies == ("127.0.0.1", "::1")
    assert (s.max_connections_per_ip, s.publish_rate) == (0, 50.0)
    assert (s.auth_url_timeout, s.auth_cache_ttl, s.auth_cookie) == (2.0, 5.0, "streamgate_token")


def test_the_secret_is_not_in_the_settings_repr() -> None:
    s = Settings(auth_key="a-secret-of-at-least-thirty-two-bytes!")
    assert "a-secret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMGATE_TRUSTED_PROXIES": "10.0.0.300"}, "not an address or CIDR"),
        ({"STREAMGATE_AUTH_URL": "ftp://x/"}, "http:// or https://"),
        ({"STREAMGATE_AUTH_COOKIE": "a b"}, "not a cookie name"),
        ({"STREAMGATE_PUBLISH_RATE": "-1"}, "publish_rate must not be negative"),
        ({"STREAMGATE_AUTH_URL_TIMEOUT": "0"}, "auth_url_timeout must be positive"),
    ],
)
def test_bad_access_control_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_env(env)


def test_metrics_and_logs_settings() -> None:
    s = Settings()
    assert (s.metrics, s.metrics_token, s.access_log, s.log_format) == (True, "", False, "text")
    env = {"STREAMGATE_METRICS": "false", "STREAMGATE_ACCESS_LOG": "1"}
    assert (from_env(env).metrics, from_env(env).access_log) == (False, True)
    s = from_args(["--metrics", "false", "--log-format", "json", "--access-log"], {})
    assert (s.metrics, s.log_format, s.access_log) == (False, "json", True)
    assert "metrics_token" not in repr(Settings(metrics_token="secret"))  # a credential
