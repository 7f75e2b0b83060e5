"""`python -m ct_platform.serving`'s options: each from its argument, else its
$CT_SERVING_<OPTION> (what a container sets), else the server's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from ct_platform.serving.__main__ import OPTIONS, build_parser, config_from_args, option_env_var
from ct_platform.serving.config import DEFAULT_MAX_ROWS


@pytest.fixture(autouse=True)
def no_serving_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for option, *_ in OPTIONS:
        monkeypatch.delenv(option_env_var(option), raising=False)
    monkeypatch.delenv("CT_SERVING_ONNX", raising=False)


def test_an_argument_wins_over_the_environment_which_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CT_SERVING_BUNDLE", "/srv/bundles/bank-v3")
    monkeypatch.setenv("CT_SERVING_PORT", "9001")
    monkeypatch.setenv("CT_SERVING_BODY_TIME_LIMIT", "2.5")
    monkeypatch.setenv("CT_SERVING_UNKNOWN_COLUMNS", "reject")
    monkeypatch.setenv("CT_SERVING_ONNX", "0")

    config = config_from_args(build_parser().parse_args(["--port", "9002"]))

    assert config.port == 9002  # the argument
    assert config.bundle == Path("/srv/bundles/bank-v3")  # the environment, typed
    assert config.body_time_limit_s == 2.5
    assert config.unknown_columns == "reject"
    assert config.use_onnx is False
    assert config.max_rows == DEFAULT_MAX_ROWS  # neither: the server's default
    assert config.host == "127.0.0.1" and config.candidate is None


def test_every_option_names_its_environment_variable() -> None:
    assert option_env_var("--max-header-bytes") == "CT_SERVING_MAX_HEADER_BYTES"
    assert option_env_var("--admin-token-env") == "CT_SERVING_ADMIN_TOKEN_ENV"
    assert all(about for *_, about in OPTIONS)  # `--help` explains each


def test_a_policy_outside_its_choices_is_refused_naming_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--out-of-contract", "maybe"])
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
