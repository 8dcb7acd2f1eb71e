"""Account errors, each with a stable machine code."""

from __future__ import annotations

from echo_identity.errors import EchoError


class AccountError(EchoError):
    code = "account_error"
    status = 400


class InvalidCredentialsError(AccountError):
    """Unknown user, wrong password or disabled account: deliberately indistinguishable."""

    code = "invalid_credentials"
    status = 401
    description = "Invalid username or password."


class InvalidUsernameError(AccountError):
    code = "invalid_username"
    description = "Usernames are 1-64 characters: letters, digits and . _ @ + - (case-insensitive)."


class InvalidEmailError(AccountError):
    code = "invalid_email"
    description = "Give an e-mail address of the form name@example.org."


class WeakPasswordError(AccountError):
    code = "weak_password"
    description = "Passwords must be 8 to 1024 characters long."


class UsernameTakenError(AccountError):
    code = "username_taken"
    status = 409
    description = "That username is already taken."


class EmailTakenError(AccountError):
    code = "email_taken"
    status = 409
    description = "That e-mail address already belongs to another user."


class UnknownUserError(AccountError):
    code = "unknown_user"
    status = 404
    description = "No user has that username."


class WrongCurrentPasswordError(AccountError):
    """The password change form's current password does not match (recorded like a failed
    sign-in)."""

    code = "wrong_current_password"
    description = "Your current password is not correct; nothing was changed."


class PasswordMismatchError(AccountError):
    code = "password_mismatch"
    description = "The two new passwords are not the same; nothing was changed."
