"""The mode decides the class of the services' AEs; the switches the promises need are the same
in every mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages as pynetdicom_dimse_messages

from gateway.netdicom.ae import PlainAE, PromptAE
from gateway.netdicom.modes import application_entity, configure_pynetdicom
from gateway.settings import GatewaySettings
from ingest.incoming import IncomingFiles

SWITCHES = (
    "STORE_RECV_CHUNKED_DATASET",
    "STORE_SEND_CHUNKED_DATASET",
    "UNRESTRICTED_STORAGE_SERVICE",
)


@pytest.mark.parametrize(("mode", "ae_class"), [("prompt", PromptAE), ("plain", PlainAE)])
def test_the_mode_gives_the_class_of_the_application_entity(
    mode: str, ae_class: type[PromptAE | PlainAE]
) -> None:
    ae = application_entity(mode, "GATEWAY")  # type: ignore[arg-type]
    assert type(ae) is ae_class
    assert ae.ae_title == "GATEWAY"


def test_prompt_is_the_default_and_plain_is_one_setting_away() -> None:
    assert GatewaySettings().netdicom == "prompt"
    assert GatewaySettings.model_validate({"netdicom": "plain"}).netdicom == "plain"


@pytest.fixture
def switches_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's switches off, as a fresh process has them, and put back after the test."""
    for name in SWITCHES:
        monkeypatch.setattr(pynetdicom_config, name, False)
    monkeypatch.setattr(
        pynetdicom_dimse_messages,
        "NamedTemporaryFile",
        pynetdicom_dimse_messages.NamedTemporaryFile,  # type: ignore[attr-defined]
    )


@pytest.mark.usefixtures("switches_restored")
def test_configuring_pynetdicom_sets_every_switch_and_the_file_factory(tmp_path: Path) -> None:
    incoming = IncomingFiles(tmp_path)
    configure_pynetdicom(incoming)
    assert all(getattr(pynetdicom_config, name) is True for name in SWITCHES)
    assert pynetdicom_dimse_messages.NamedTemporaryFile is incoming  # type: ignore[attr-defined, comparison-overlap]


@pytest.mark.usefixtures("switches_restored")
def test_a_process_that_only_sends_keeps_pynetdicom_s_file_factory() -> None:
    factory = pynetdicom_dimse_messages.NamedTemporaryFile  # type: ignore[attr-defined]
    configure_pynetdicom()
    assert pynetdicom_config.STORE_SEND_CHUNKED_DATASET is True
    assert pynetdicom_dimse_messages.NamedTemporaryFile is factory  # type: ignore[attr-defined]
