"""Every service's migrations build, on an empty database, exactly what its models describe."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db import Database, make_engine
from shared.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]


def _services():
    from gateway.models import Base as GatewayBase
    from services.contacts.models import Base as ContactsBase
    from services.marketing.models import Base as MarketingBase
    from services.notifications.models import Base as NotificationsBase
    from services.sales.models import Base as SalesBase
    from services.support.models import Base as SupportBase

    return {
        "contacts": (ROOT / "services/contacts/migrations", ContactsBase.metadata),
        "gateway": (ROOT / "gateway/migrations", GatewayBase.metadata),
        "sales": (ROOT / "services/sales/migrations", SalesBase.metadata),
        "support": (ROOT / "services/support/migrations", SupportBase.metadata),
        "notifications": (ROOT / "services/notifications/migrations", NotificationsBase.metadata),
        "marketing": (ROOT / "services/marketing/migrations", MarketingBase.metadata),
    }


@pytest.mark.parametrize(
    "service", ["contacts", "gateway", "sales", "support", "notifications", "marketing"]
)
def test_migrating_an_empty_database_matches_the_models(service, database_url):
    script_location, metadata = _services()[service]
    Database.define_messaging_tables(metadata)
    upgrade(script_location, database_url)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    engine.dispose()
