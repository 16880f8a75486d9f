"""What a child process gets in its environment: the allow-list, declared variables, labels that can be
variables (the others listed), never a token."""

from __future__ import annotations

from rollbackd import childenv, redact

DAEMON_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/var/lib/rollbackd",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "ROLLBACKD_WEBHOOK_TOKEN": "webhook-token-abcdefgh",
    "ROLLBACKD_API_TOKEN": "api-token-abcdefgh",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "DATABASE_URL": "postgresql://u:p@db/x",
    "PGPASSWORD": "pw",
    "HTTPS_PROXY": "http://user:pass@proxy:3128",
    "SLACK_BOT_TOKEN": "xoxb-1",
}


def test_only_the_allow_list_is_inherited() -> None:
    assert childenv.inherited(DAEMON_ENV) == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/var/lib/rollbackd",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }


def test_an_allowed_variable_carrying_a_secret_is_dropped() -> None:
    redact.register("s3cr3t-value-for-childenv")
    env = childenv.inherited({"PATH": "/bin", "HOME": "/home/x:s3cr3t-value-for-childenv"})
    assert env == {"PATH": "/bin"}


def test_declared_then_fields_win_over_inherited() -> None:
    env = childenv.build(
        {"PATH": "/opt/bin", "KUBECONFIG": "/etc/kube"}, {"ROLLBACKD_SERVICE": "rag"}, environ=DAEMON_ENV
    )
    assert env["PATH"] == "/opt/bin" and env["KUBECONFIG"] == "/etc/kube" and env["ROLLBACKD_SERVICE"] == "rag"
    assert not set(env) & {
        "ROLLBACKD_WEBHOOK_TOKEN",
        "ROLLBACKD_API_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DATABASE_URL",
        "PGPASSWORD",
        "HTTPS_PROXY",
        "SLACK_BOT_TOKEN",
    }


def test_label_names_that_cannot_be_variables_are_skipped_and_listed() -> None:
    labels = {
        "instance": "a:9100",
        "a=b": "x",
        "a-b": "y",
        "1x": "z",
        "": "e",
        "_ok": "1",
        "k\u212a": "v",
        "nul": "a\x00b",
        "newline": "line1\nline2",
        "job": "$(id)",
    }
    env, skipped = childenv.label_vars(labels)
    assert env == {
        "ROLLBACKD_LABEL_INSTANCE": "a:9100",
        "ROLLBACKD_LABEL__OK": "1",
        "ROLLBACKD_LABEL_NEWLINE": "line1\nline2",
        "ROLLBACKD_LABEL_JOB": "$(id)",
    }
    assert skipped == sorted(["a=b", "a-b", "1x", "", "k\u212a", "nul"])


def test_case_collisions_resolve_by_code_point_order() -> None:
    for order in (["foo", "Foo", "FOO"], ["FOO", "foo", "Foo"]):
        labels = {name: f"value of {name}" for name in order}
        env, skipped = childenv.label_vars(labels)
        assert env == {"ROLLBACKD_LABEL_FOO": "value of FOO"}  # "FOO" < "Foo" < "foo"
        assert skipped == ["Foo", "foo"]
