"""Privacy errors, each with a stable machine code::

    EchoError
    └── PrivacyError                 (privacy_error)
        ├── UnknownSubjectError      (unknown_user, 404)
        ├── ConfirmationMismatchError (confirmation_mismatch, 400)
        └── ApplicationNotAuthorisedError (application_not_authorised, 404)

A wrong current password on the export and delete pages is accounts'
:class:`~echo_identity.accounts.errors.WrongCurrentPasswordError`, as on the password page.
"""

from __future__ import annotations

from echo_identity.errors import EchoError


class PrivacyError(EchoError):
    code = "privacy_error"
    status = 400


class UnknownSubjectError(PrivacyError):
    """No user has that sub or username, and no unfinished erasure has that sub."""

    code = "unknown_user"
    status = 404
    description = "No user has that subject or username (and no erasure of it is unfinished)."


class ConfirmationMismatchError(PrivacyError):
    """The account deletion form's typed username is not the signed-in user's."""

    code = "confirmation_mismatch"
    description = "Type your username exactly to confirm; nothing was deleted."


class ApplicationNotAuthorisedError(PrivacyError):
    """The signed-in user has neither a consent nor a live grant for that client: another
    user's application, an unknown client id, or one already withdrawn. Nothing changes."""

    code = "application_not_authorised"
    status = 404
    description = "You have not authorised that application."
