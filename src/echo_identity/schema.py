"""Every domain's models, imported once so ``Base.metadata`` is complete (Alembic, tests), and
every domain's encrypted columns, listed once for key rotation (:data:`ENCRYPTED_COLUMNS`)."""

from __future__ import annotations

from echo_identity.accounts import models as accounts_models
from echo_identity.audit import alert_models, log_models
from echo_identity.audit import keys as audit_keys
from echo_identity.audit import models as audit_models
from echo_identity.db import Base
from echo_identity.idp import keys as idp_keys
from echo_identity.idp import models as idp_models
from echo_identity.keys import models as keys_models
from echo_identity.keys.columns import EncryptedColumn
from echo_identity.privacy import models as privacy_models
from echo_identity.vault import models as vault_models

metadata = Base.metadata
MODEL_MODULES = (
    keys_models,
    accounts_models,
    audit_models,
    alert_models,
    log_models,
    idp_models,
    vault_models,
    privacy_models,
)

# Every column that holds envelope ciphertexts, each declared next to its domain's models. DEK
# rotation re-encrypts these and deletes the DEKs none of them references: a new encrypted
# column must be listed here (tests/unit/test_schema.py fails until it is).
ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    vault_models.ACCESS_TOKEN,
    vault_models.REFRESH_TOKEN,
    vault_models.CLIENT_SECRET,
    idp_keys.PRIVATE_KEY,
    audit_keys.PRIVATE_KEY,
)
