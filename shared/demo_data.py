"""The demo dataset's raw material: names, companies, products, ticket subjects.

Every address is under `.example` (RFC 2606), so no demo email can reach a real mailbox.
"""

from __future__ import annotations

# name, domain, industry, size
COMPANIES = (
    ("Northwind Traders", "northwind.example", "Wholesale", "51-200"),
    ("Contoso Pharmaceuticals", "contoso.example", "Healthcare", "1001-5000"),
    ("Fabrikam Robotics", "fabrikam.example", "Manufacturing", "201-500"),
    ("Tailspin Toys", "tailspin.example", "Retail", "11-50"),
    ("Wingtip Travel", "wingtip.example", "Travel", "51-200"),
    ("Adventure Works Cycles", "adventure-works.example", "Sporting goods", "201-500"),
    ("Litware Software", "litware.example", "Software", "11-50"),
    ("Proseware Analytics", "proseware.example", "Software", "51-200"),
    ("Woodgrove Bank", "woodgrove.example", "Financial services", "5001+"),
    ("Alpine Ski House", "alpineskihouse.example", "Hospitality", "11-50"),
)

# Companies that are only leads so far: name, domain.
PROSPECTS = (
    ("Blue Yonder Airlines", "blueyonder.example"),
    ("Coho Winery", "cohowinery.example"),
    ("Fourth Coffee", "fourthcoffee.example"),
    ("Graphic Design Institute", "graphicdesign.example"),
    ("Humongous Insurance", "humongous.example"),
    ("Lucerne Publishing", "lucerne.example"),
    ("Margie's Travel", "margiestravel.example"),
    ("Trey Research", "treyresearch.example"),
)

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Bea", "Carlos", "Chen", "Dana", "Elif", "Farah", "Grace",
    "Hugo", "Ines", "Jonas", "Kofi", "Lena", "Mateo", "Nadia", "Olu", "Priya", "Quinn",
    "Ravi", "Sofia", "Tomas", "Uma", "Viktor", "Wen", "Yara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Andersen", "Baptiste", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad",
    "Ivanova", "Jensen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov",
    "Quispe", "Rossi", "Schmidt", "Tanaka", "Umarov", "Varga", "Weber", "Yilmaz",
)  # fmt: skip

TITLES = (
    "CEO", "CTO", "Head of Operations", "Procurement Manager", "IT Director",
    "Office Manager", "Finance Director", "Product Owner", "Sales Director",
)  # fmt: skip
# Weighted so that the funnel looks like one: more leads and customers than churned.
LIFECYCLE_STAGES = (
    ("subscriber", 2),
    ("lead", 3),
    ("opportunity", 3),
    ("customer", 4),
    ("churned", 1),
)
TAGS = ("vip", "partner", "trial", "enterprise", "smb", "event-2026")
NEWSLETTER_TAG = "newsletter"

LEAD_SOURCES = ("web_form", "referral", "event", "linkedin", "cold_call")
UNQUALIFIED_REASONS = ("No budget this year", "Student project", "Wrong region")

PRODUCTS = (
    "Annual licence",
    "Onboarding package",
    "Premium support plan",
    "Fleet upgrade",
    "Pilot project",
    "Data migration",
    "Training days",
)
LOST_REASONS = ("Went with a competitor", "Budget frozen", "No decision made")

TASK_TITLES = (
    "Call back about pricing",
    "Send the proposal",
    "Book a product demo",
    "Follow up after the meeting",
    "Prepare the contract",
    "Check in after onboarding",
)

# subject, description
TICKET_SUBJECTS = (
    ("Cannot sign in after password reset", "The reset link works but the new password fails."),
    ("Invoice shows the wrong VAT number", "Our VAT number changed in March."),
    ("Export to CSV times out", "The export of last year's orders never finishes."),
    ("Request: add a second admin", "Our IT lead needs admin rights too."),
    ("Mobile app crashes on start", "Since the last update the app closes at once."),
    ("Question about the premium plan", "Does it include phone support at weekends?"),
    ("Emails arrive twice", "Every notification reaches us two times."),
    ("Data import rejected rows", "About 40 rows were refused without a clear reason."),
    ("Change of billing address", "We moved offices; please update the address."),
    ("Slow dashboard in the morning", "Between 8 and 9 the dashboard takes a minute."),
)
AGENT_REPLY = "Thanks for reaching out: we are looking into it and will update you today."
CUSTOMER_REPLY = "Thank you, that would be great. Let me know if you need anything from us."
INTERNAL_NOTE = "Checked the logs: looks like the known issue from last week."
CSAT_COMMENTS = ("Quick and friendly, thanks!", "Solved, but it took a while.", "Great help.")

TEMPLATE = {
    "name": "Demo: webinar invitation",
    "category": "marketing",
    "subject": "Join our spring webinar, {{ contact.first_name }}",
    "body_text": (
        "Hello {{ contact.first_name }},\n\n"
        "we would love to show you what is new this spring: a 30-minute webinar on "
        "Thursday at 10:00 CET.\n\nSee you there!"
    ),
    "description": "Made by `crm seed --demo`.",
}
DRAFT_CAMPAIGN = {
    "name": "Demo: summer product update",
    "subject": "What is new this summer",
    "body_text": "Hello,\n\nhere is what we shipped this quarter.\n\nThe team",
}
LAUNCHED_CAMPAIGN = {"name": "Demo: spring webinar invitation", "template": TEMPLATE["name"]}
