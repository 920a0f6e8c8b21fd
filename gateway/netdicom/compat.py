"""The pynetdicom this package is written for, and every name of it beyond the public API.

The extensions subclass pynetdicom's providers, override private methods and read private
attributes. A pynetdicom that renames one of them need not fail: an override that is no longer
called, or a switch set on a module that no longer reads it, just stops working. So start-up
checks (:func:`check_installed`) that the installed pynetdicom is :data:`PINNED_VERSION` and
that every name in :data:`REACHES` still exists. Plain mode (``netdicom = "plain"``) checks
only the names it uses itself, whatever the version.

On an upgrade: read pynetdicom's changes to each module named in :data:`REACHES`, re-check the
module of ours that uses it (:attr:`Reach.user`), run the unit tests of gateway/netdicom, then
move :data:`PINNED_VERSION` (and the pin in pyproject.toml).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import logging
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

import pynetdicom

from gateway.errors import IncompatibleLibrary
from gateway.settings import NetdicomMode

log = logging.getLogger(__name__)

PINNED_VERSION = "3.0.4"


@dataclass(frozen=True)
class Reach:
    """One name of pynetdicom that the extensions use.

    ``name`` is an attribute of the module, or ``Class.attribute`` (an attribute of the class,
    or one that the class's methods set on ``self``), or ``Class.method(parameter)``.
    """

    module: str
    name: str
    #: The module of ours that uses it: what to re-check when it changes.
    user: str
    #: Plain mode uses it too (for a promise that every mode keeps).
    plain: bool = False

    def __str__(self) -> str:
        return f"{self.module}.{self.name} (used by gateway/netdicom/{self.user}.py)"


def _reaches(user: str, module: str, *names: str, plain: bool = False) -> tuple[Reach, ...]:
    return tuple(Reach(module, name, user, plain) for name in names)


_CONFIG = "pynetdicom._config"
_ASSOCIATION = "pynetdicom.association"
_DUL = "pynetdicom.dul"
_TRANSPORT = "pynetdicom.transport"
_FSM = "pynetdicom.fsm"
_DIMSE = "pynetdicom.dimse"

#: Every name of pynetdicom beyond its public API that gateway/netdicom uses.
REACHES: tuple[Reach, ...] = (
    # Every mode: the promises of the services (see the package docstring).
    *_reaches(
        "modes",
        _CONFIG,
        "STORE_RECV_CHUNKED_DATASET",
        "STORE_SEND_CHUNKED_DATASET",
        "UNRESTRICTED_STORAGE_SERVICE",
        plain=True,
    ),
    *_reaches("modes", "pynetdicom.dimse_messages", "NamedTemporaryFile", plain=True),
    *_reaches("modes", "pynetdicom.acse", "negotiate_unrestricted", plain=True),
    *_reaches("dicom_socket", _ASSOCIATION, "Association.dul", plain=True),
    *_reaches("dicom_socket", _DUL, "DULServiceProvider.socket", plain=True),
    *_reaches("dicom_socket", _TRANSPORT, "AssociationSocket.socket", plain=True),
    *_reaches(
        "association",
        _ASSOCIATION,
        "Association.acse",
        "Association.dimse",
        "Association.kill",
        plain=True,
    ),
    *_reaches("association", "pynetdicom.acse", "ACSE.send_reject", "ACSE.is_aborted", plain=True),
    *_reaches(
        "association",
        _DUL,
        "DULServiceProvider.state_machine",
        "DULServiceProvider.is_alive",
        plain=True,
    ),
    *_reaches("association", _FSM, "StateMachine.current_state", plain=True),
    *_reaches("association", _DIMSE, "DIMSEServiceProvider.message", plain=True),
    *_reaches(
        "association", "pynetdicom.dimse_messages", "DIMSEMessage._data_set_path", plain=True
    ),
    *_reaches("association", "pynetdicom.pdu_primitives", "A_RELEASE.result", plain=True),
    *_reaches("association", _TRANSPORT, "AssociationSocket._shutdown_socket", plain=True),
    *_reaches("backpressure", _DUL, "DULServiceProvider.to_provider_queue", plain=True),
    *_reaches("connection_logs", _DUL, "DULServiceProvider.assoc", plain=True),
    *_reaches("connect_failures", _DUL, "DULServiceProvider.assoc", plain=True),
    *_reaches(
        "acceptor",
        _TRANSPORT,
        "AssociationServer.__init__(request_handler)",
        "ThreadedAssociationServer.get_request",
        "ThreadedAssociationServer.ssl_context",
        plain=True,
    ),
    *_reaches("acceptor", "pynetdicom.ae", "ApplicationEntity._servers", plain=True),
    *_reaches("ae", _TRANSPORT, "RequestHandler._create_association", plain=True),
    *_reaches(
        "handover",
        _TRANSPORT,
        "ThreadedAssociationServer.ae",
        "ThreadedAssociationServer.process_request_thread",
        "ThreadedAssociationServer.finish_request",
        plain=True,
    ),
    # Prompt mode only.
    *_reaches(
        "ae",
        "pynetdicom.ae",
        "ApplicationEntity._create_socket",
    ),
    *_reaches("ae", _ASSOCIATION, "Association._reactor_checkpoint"),
    *_reaches("ae", _TRANSPORT, "RequestHandler.ae"),
    *_reaches(
        "ae",
        _TRANSPORT,
        "AssociationSocket.tls_args",
        "AssociationSocket.__init__(client_socket)",
        "AssociationSocket.__init__(address)",
    ),
    *_reaches(
        "reactor_hold", _ASSOCIATION, "Association._reactor_checkpoint", "Association._is_paused"
    ),
    *_reaches(
        "prompt_dul",
        _DUL,
        "DULServiceProvider.run_reactor",
        "DULServiceProvider.send_pdu",
        "DULServiceProvider.kill_dul",
        "DULServiceProvider._is_transport_event",
        "DULServiceProvider._process_recv_primitive",
        "DULServiceProvider._kill_thread",
        "DULServiceProvider.artim_timer",
        "DULServiceProvider.event_queue",
        "DULServiceProvider.to_user_queue",
        "DULServiceProvider.to_provider_queue",
        "DULServiceProvider.state_machine",
        "DULServiceProvider.socket",
    ),
    *_reaches(
        "prompt_dul",
        _DUL,
        "DULServiceProvider._read_pdu_data",
        "DULServiceProvider._decode_pdu",
        "DULServiceProvider._recv_pdu",
        "DULServiceProvider.assoc",
    ),
    *_reaches("prompt_dul", _ASSOCIATION, "Association._accepted_cx", "Association.dimse"),
    *_reaches("prompt_dul", _DIMSE, "DIMSEServiceProvider.message"),
    *_reaches("prompt_dul", "pynetdicom.timer", "Timer._start_time", "Timer.remaining"),
    *_reaches(
        "prompt_dul",
        _FSM,
        "TRANSITION_TABLE",
        "StateMachine.do_action",
        "StateMachine.current_state",
        "StateMachine.dul",
    ),
    *_reaches(
        "prompt_dul", _TRANSPORT, "AssociationSocket._is_connected", "AssociationSocket.close"
    ),
    *_reaches(
        "prompt_socket",
        _TRANSPORT,
        "AssociationSocket.ready",
        "AssociationSocket.send",
        "AssociationSocket.recv",
        "AssociationSocket._shutdown_socket",
        "AssociationSocket._is_connected",
        "AssociationSocket.event_queue",
        "AssociationSocket.assoc",
    ),
    *_reaches(
        "prompt_dimse", _DIMSE, "DIMSEServiceProvider.get_msg", "DIMSEServiceProvider.msg_queue"
    ),
    *_reaches(
        "store_dimse",
        _DIMSE,
        "DIMSEServiceProvider.send_msg",
        "DIMSEServiceProvider.receive_primitive",
        "DIMSEServiceProvider.get_msg",
        "DIMSEServiceProvider.msg_queue",
        "DIMSEServiceProvider.message",
        "DIMSEServiceProvider.maximum_pdu_size",
        "DIMSEServiceProvider.dul",
    ),
    *_reaches(
        "store_dimse",
        _ASSOCIATION,
        "Association._reactor_checkpoint",
        "Association._handle_no_response",
    ),
    *_reaches("store_dimse", "pynetdicom.dimse_primitives", "C_STORE._context_id"),
    *_reaches("store_dimse", "pynetdicom.pdu_primitives", "P_DATA.presentation_data_value_list"),
    *_reaches("store_messages", "pynetdicom.dimse_primitives", "C_STORE._dataset_path"),
    *_reaches("pdata_run", "pynetdicom.pdu_primitives", "P_DATA.presentation_data_value_list"),
)


def required(mode: NetdicomMode) -> tuple[Reach, ...]:
    """The names ``mode`` uses."""
    return tuple(reach for reach in REACHES if mode == "prompt" or reach.plain)


def missing(reaches: tuple[Reach, ...], modules: Mapping[str, ModuleType]) -> list[Reach]:
    """Those of ``reaches`` that ``modules`` (pynetdicom's, by name) do not have."""
    return [reach for reach in reaches if not _exists(modules.get(reach.module), reach)]


def check(mode: NetdicomMode, version: str, modules: Mapping[str, ModuleType]) -> None:
    """Raise :class:`IncompatibleLibrary` unless pynetdicom ``version``, with ``modules`` (its
    modules by name), has what ``mode`` needs; the message says what to do and to re-check."""
    gone = missing(required(mode), modules)
    wrong_version = mode == "prompt" and version != PINNED_VERSION
    if not gone and not wrong_version:
        return
    problems = []
    if wrong_version:
        problems.append(
            f"pynetdicom {version} is installed, and the gateway's extensions of it "
            f'(netdicom = "prompt", the default) are written for pynetdicom {PINNED_VERSION}'
        )
    if gone:
        problems.append(
            f"pynetdicom {version} lacks names the gateway uses: " + "; ".join(map(str, gone))
        )
    if any(reach.plain for reach in gone):
        remedy = f"install pynetdicom=={PINNED_VERSION} (plain mode needs these names too)"
    else:
        remedy = (
            f'install pynetdicom=={PINNED_VERSION}, or set netdicom = "plain" '
            "(GATEWAY_NETDICOM=plain) to run on plain pynetdicom"
        )
    raise IncompatibleLibrary(
        f"{'. '.join(problems)}. To start: {remedy}. To upgrade: re-check each name in "
        "gateway/netdicom/compat.py against the new pynetdicom, then move PINNED_VERSION."
    )


@functools.cache  # once per process: ``serve`` starts both services
def check_installed(mode: NetdicomMode) -> None:
    """:func:`check` for the installed pynetdicom."""
    names = {reach.module for reach in required(mode)}
    modules = {name: importlib.import_module(name) for name in names}
    check(mode, pynetdicom.__version__, modules)
    log.info("pynetdicom %s, netdicom = %s", pynetdicom.__version__, mode)


def _exists(module: ModuleType | None, reach: Reach) -> bool:
    if module is None:
        return False
    owner_name, _, rest = reach.name.partition(".")
    owner = getattr(module, owner_name, None)
    if owner is None or not rest:
        return owner is not None
    attribute, _, parameter = rest.partition("(")
    if parameter:
        method = getattr(owner, attribute, None)
        return method is not None and parameter.rstrip(")") in _parameters(method)
    if hasattr(owner, attribute):
        return True
    return isinstance(owner, type) and attribute in _set_on_self(owner)


def _parameters(function: object) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return frozenset()


@functools.cache
def _set_on_self(cls: type) -> frozenset[str]:
    """The attributes that the methods of ``cls`` and its bases assign to ``self``.

    Instance attributes exist only once an instance is made; reading the source of the
    classes checks them without making one.
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # a built-in class, or no source: nothing to find there
            continue
        for node in ast.walk(ast.parse(source)):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            names.update(_self_attributes(targets))
    return frozenset(names)


def _self_attributes(targets: list[ast.expr]) -> set[str]:
    """``x`` of each ``self.x`` among assignment targets, unpacked ones too."""
    found: set[str] = set()
    for target in targets:
        if isinstance(target, ast.Tuple | ast.List):
            found |= _self_attributes(target.elts)
        elif (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "self"
        ):
            found.add(target.attr)
    return found
