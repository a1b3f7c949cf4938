"""The `crm` command: dead-letter commands against the real broker, the gateway worker."""

from __future__ import annotations

import json

import pika
import pytest
import sqlalchemy as sa

from shared import cli
from shared.bus import declare_topology


@pytest.fixture
def contacts_settings(make_settings, monkeypatch):
    settings = make_settings("contacts")
    monkeypatch.setenv("CRM_AMQP_URL", settings.amqp_url)
    monkeypatch.setenv("CRM_AMQP_PREFIX", settings.amqp_prefix)
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    declare_topology(connection.channel(), settings, ["deal.won"])
    connection.close()
    return settings


def dead_letter(settings, body: bytes) -> None:
    """Put a message straight into the DLQ, as the consumer would."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    headers = {"x-crm-reason": "malformed", "x-crm-error": "body is not JSON"}
    properties = pika.BasicProperties(headers=headers, delivery_mode=2)
    channel.basic_publish(
        settings.dead_letter_exchange, settings.dead_letter_queue, body, properties
    )
    connection.close()


def test_crm_dlq_lists_dead_letters_as_json_lines_and_replays_them(contacts_settings, capsys):
    dead_letter(contacts_settings, b"{not json")
    with pytest.raises(SystemExit) as listed:
        cli.main(["dlq", "list", "contacts"])
    assert listed.value.code == 0
    [line] = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line) == {
        "reason": "malformed",
        "error": "body is not JSON",
        "attempt": 0,
        "body": "{not json",
    }
    with pytest.raises(SystemExit):
        cli.main(["dlq", "replay", "contacts"])
    assert "1 dead letters replayed" in capsys.readouterr().out
    connection = pika.BlockingConnection(pika.URLParameters(contacts_settings.amqp_url))
    method, _props, body = connection.channel().basic_get(contacts_settings.queue, auto_ack=True)
    connection.close()
    assert method is not None and body == b"{not json"


def test_crm_runs_a_gateway_worker_that_crm_dlq_does_not_offer(capsys, monkeypatch):
    started = []
    monkeypatch.setattr("gateway.worker.main", lambda: started.append(True))

    assert "gateway-worker: " in cli.procfile()
    with pytest.raises(SystemExit) as ran:
        cli.main(["gateway", "worker"])
    assert ran.value.code == 0 and started == [True]
    with pytest.raises(SystemExit) as refused:
        cli.parser().parse_args(["dlq", "list", "gateway"])
    assert refused.value.code == 2
    assert "invalid choice: 'gateway'" in capsys.readouterr().err


def test_migrating_the_gateway_declares_no_queue(tmp_path, monkeypatch):
    declared = []
    monkeypatch.setattr("shared.bus.prepare_queues", lambda *args: declared.append(args))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'gateway.db'}")

    cli.migrate("gateway")

    assert declared == []
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    with engine.connect() as connection:
        assert "version" in {
            column["name"] for column in sa.inspect(connection).get_columns("users")
        }
    engine.dispose()


def test_the_gateway_alone_also_listens_on_its_internal_address(monkeypatch):
    monkeypatch.delenv("CRM_INTERNAL_BIND", raising=False)
    monkeypatch.setenv("CRM_GATEWAY_PORT", "9000")
    lines = dict(line.split(": ", 1) for line in cli.procfile().splitlines())

    assert "--bind 127.0.0.1:9000 --bind 127.0.0.1:9100 " in lines["gateway"]
    assert lines["contacts"].count("--bind") == 1
    monkeypatch.setenv("CRM_INTERNAL_BIND", "127.0.0.1:7777")
    assert "--bind 127.0.0.1:7777 " in cli.procfile().splitlines()[0]


def test_crm_gateway_api_binds_the_public_and_the_internal_address(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("os.execv", lambda _path, argv: ran.append(argv))
    monkeypatch.setenv("CRM_JWT_SECRET", "cli-tests-" + "s" * 40)
    monkeypatch.setenv("CRM_BIND", "0.0.0.0:8000")
    monkeypatch.setenv("CRM_INTERNAL_BIND", "0.0.0.0:8100")

    for service in ("gateway", "contacts"):
        with pytest.raises(SystemExit):
            cli.main([service, "api"])

    gateway, contacts = ran
    assert gateway[-5:] == [
        "--bind",
        "0.0.0.0:8000",
        "--bind",
        "0.0.0.0:8100",
        "gateway.app:create_app()",
    ]
    assert contacts[-3:] == ["--bind", "0.0.0.0:8000", "services.contacts.app:create_app()"]


def test_crm_openapi_writes_one_stable_document_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path / "var"))
    for output in ("first.json", "second.json"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["openapi", "--output", output])
        assert exit_.value.code == 0
    with pytest.raises(SystemExit):
        cli.main(["openapi"])
    first = (tmp_path / "first.json").read_bytes()
    assert first == (tmp_path / "second.json").read_bytes()
    assert capsys.readouterr().out.encode() == first
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first.json", "second.json"]
    document = json.loads(first)
    assert document["x-unavailable"] == []
    assert "/api/v1/contacts" in document["paths"] and "/api/v1/users" in document["paths"]
