"""Every domain's models, imported once so ``Base.metadata`` is complete (Alembic, tests)."""

from __future__ import annotations

from echo_identity.accounts import models as accounts_models
from echo_identity.audit import alert_models, log_models
from echo_identity.audit import models as audit_models
from echo_identity.db import Base
from echo_identity.idp import models as idp_models
from echo_identity.vault import models as vault_models

metadata = Base.metadata
MODEL_MODULES = (accounts_models, audit_models, alert_models, log_models, idp_models, vault_models)
