"""The exceptions of the wire contract.

All derive from :class:`ContractError`, a :class:`ValueError`, because each one means a value
(a key, a name, a message) does not follow the contract; callers at a service boundary catch
``ContractError`` and convert it to their own error.
"""


class ContractError(ValueError):
    """A value does not follow the wire contract."""


class InvalidObjectKey(ContractError):
    """An object key, or one of the parts it is built from, does not follow the key layout."""


class InvalidEvent(ContractError):
    """A message is not a well-formed CloudEvent of the contract."""
