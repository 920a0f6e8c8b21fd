"""The service fixtures give a working S3 and RabbitMQ, and read the environment as documented."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from tests.support.services import (
    S3Service,
    TestServices,
    amqp_answers,
    bucket_name_for,
    docker_available,
    is_valid_bucket_name,
    redacted,
    s3_answers,
)


def test_s3_bucket_put_and_get(s3_service: S3Service, bucket_name: str) -> None:
    client = s3_service.client()
    assert not client.bucket_exists(bucket_name)
    client.make_bucket(bucket_name)
    try:
        payload = bytes(range(256)) * 40
        client.put_object(bucket_name, "some/key.dcm", io.BytesIO(payload), len(payload))
        response = client.get_object(bucket_name, "some/key.dcm")
        try:
            assert response.read() == payload
        finally:
            response.close()
            response.release_conn()
    finally:
        client.remove_object(bucket_name, "some/key.dcm")
        client.remove_bucket(bucket_name)


def test_s3_checks_signatures(s3_service: S3Service) -> None:
    wrong_secret = S3Service(s3_service.endpoint, s3_service.access_key, "not-the-secret-key")
    assert s3_answers(s3_service)
    assert not s3_answers(wrong_secret)


def test_amqp_url_answers(amqp_url: str) -> None:
    assert amqp_answers(amqp_url)


def test_amqp_probe_fails_on_a_closed_port() -> None:
    assert not amqp_answers("amqp://guest:guest@127.0.0.1:1/")


def test_settings_read_the_gateway_test_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_AMQP_URL", "amqp://u:p@broker:5672/")
    monkeypatch.setenv("GATEWAY_TEST_S3_ENDPOINT", "s3:9000")
    monkeypatch.setenv("GATEWAY_TEST_S3_ACCESS_KEY", "ak")
    monkeypatch.setenv("GATEWAY_TEST_S3_SECRET_KEY", "")
    settings = TestServices()
    assert settings.amqp_url == "amqp://u:p@broker:5672/"
    assert (settings.s3_endpoint, settings.s3_access_key) == ("s3:9000", "ak")
    assert settings.s3_secret_key is None  # empty counts as unset


def test_redacted_hides_the_password() -> None:
    assert redacted("amqp://guest:secret@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert redacted("amqp://127.0.0.1/") == "amqp://127.0.0.1/"


@pytest.mark.parametrize(
    "test_name",
    [
        "test_simple",
        "test_param[1.2.840.10008.1.2.4.50-JPEG Baseline]",
        "TEST_" + "very_long_name_" * 10,
        "xn--looks-like-punycode",
        "192.168.0.1",
        "___",
    ],
)
def test_bucket_names_are_valid_and_unique(test_name: str) -> None:
    first, second = bucket_name_for(test_name), bucket_name_for(test_name)
    assert is_valid_bucket_name(first)
    assert first != second


def test_bucket_name_fixture_names_the_test(bucket_name: str) -> None:
    assert bucket_name.startswith("t-test-bucket-name-fixture-names-the-test-")


def test_docker_probe_asks_the_engine(monkeypatch: pytest.MonkeyPatch, refusing_port: int) -> None:
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as engine:

        def answer_ping() -> None:
            connection, _ = engine.accept()
            with connection:
                assert connection.recv(1024).startswith(b"GET /_ping ")
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

        responder = threading.Thread(target=answer_ping)
        responder.start()
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{engine.getsockname()[1]}")
        assert docker_available()
        responder.join(5)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{refusing_port}")
    assert not docker_available()
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert not docker_available()
