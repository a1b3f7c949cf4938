"""The contacts service's part of the subject access export: the person and their records.

The source of the person: an id it does not know is a 404 (the gateway then has no
export). A contact merged into another is found under the id it lives under now.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from services.contacts import domain, privacy
from shared.subject_export import Subject, subject_export_blueprint

ANSWERED_BY_BLUEPRINT = ("service", "exported_at")


def export_person(session: Session, subject: Subject) -> dict[str, Any]:
    """The contact, its company, notes, the whole timeline and the ids merged into it."""
    contact_id = privacy.resolve_merged(session, subject.contact_id)
    contact = domain.get_contact(session, contact_id)
    sections = privacy.subject_export(session, contact)
    # The service's name and the time of the export are the blueprint's to say.
    return {name: value for name, value in sections.items() if name not in ANSWERED_BY_BLUEPRINT}


subject_export_api = subject_export_blueprint("contacts", export_person)
