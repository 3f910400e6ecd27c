"""SYNTHETIC recommendations written for the demo's planted themes (see `themes.demo`).

One or two recommendations per planted theme, written the way a national body would write
them (not copied from the generator's sentence templates), so that theme-level link
quality can be measured on demo data: each planted theme's top link should be one of the
recommendations written for its topic. `PAIRING` is the planted truth.

These are not real recommendations; their source is "Synthetic demo recommendations".
"""

from __future__ import annotations

from pathlib import Path

import yaml

from themes.recommendations import Recommendation

SOURCE = "Synthetic demo recommendations (not a real report)"

_TEXTS: dict[str, list[tuple[str, str]]] = {
    "falls": [
        (
            "Preventing falls in hospital",
            "Assess every adult inpatient's risk of falling soon after admission, review "
            "the need for bed rails, walking aids and supervision, and check patients "
            "promptly after any fall, including for injury.",
        ),
    ],
    "medication_errors": [
        (
            "Safer administration of high-risk medicines",
            "Use independent double checks and electronic prescribing alerts for "
            "high-risk medicines such as insulin, anticoagulants and opioids, and make "
            "sure critical doses are not omitted or delayed.",
        ),
    ],
    "pressure_ulcers": [
        (
            "Preventing pressure damage",
            "Inspect the skin of patients at risk every day, reposition them regularly, "
            "provide pressure-relieving mattresses and record a care plan to prevent "
            "pressure ulcers on heels and sacrum.",
        ),
    ],
    "delayed_diagnosis": [
        (
            "Acting on test results",
            "Have a failsafe so that abnormal imaging and blood test results are seen and "
            "acted on by a responsible clinician, and so that red-flag symptoms lead to "
            "timely investigation and diagnosis.",
        ),
    ],
    "communication_families": [
        (
            "Keeping families informed",
            "Tell families promptly when a patient's condition changes or they are moved, "
            "give consistent information, and discuss resuscitation (DNACPR) decisions "
            "with the patient and their family.",
        ),
    ],
    "discharge": [
        (
            "Safe discharge from hospital",
            "Plan discharge early: confirm medicines, care packages and therapy "
            "assessments are in place, send an accurate discharge summary to the GP, and "
            "avoid discharging patients late at night.",
        ),
    ],
    "staffing": [
        (
            "Safe nurse staffing",
            "Set ward staffing establishments from patient need, review registered nurse "
            "and support staff numbers every shift, and escalate when shifts cannot be "
            "filled by bank or agency staff.",
        ),
    ],
    "equipment": [
        (
            "Maintaining medical devices",
            "Keep an inventory of medical devices, service and calibrate them on "
            "schedule, check resuscitation equipment daily, and withdraw faulty pumps and "
            "hoists from use.",
        ),
    ],
    "infection_control": [
        (
            "Preventing healthcare-associated infection",
            "Audit hand hygiene, isolate patients with suspected infectious diarrhoea or "
            "positive screening promptly in side rooms, and manage outbreaks such as "
            "norovirus and C. difficile quickly.",
        ),
    ],
    "maternity": [
        (
            "Fetal monitoring and escalation in labour",
            "Interpret CTG traces with regular fresh-eyes reviews, escalate abnormal fetal "
            "heart rate patterns to a senior obstetrician, and prepare teams for "
            "postpartum haemorrhage and neonatal resuscitation.",
        ),
    ],
    "mental_health_observation": [
        (
            "Therapeutic observation on mental health wards",
            "Carry out prescribed observations of patients at risk of self-harm or "
            "suicide at the set intervals, remove ligature risks, and manage leave to "
            "prevent patients absconding.",
        ),
    ],
    "appointments": [
        (
            "Managing waiting lists and follow-up",
            "Validate outpatient waiting lists, make sure follow-up appointments are "
            "booked and not lost, and send appointment letters to the right address.",
        ),
    ],
    "sepsis_recognition": [
        (
            "Recognising and treating sepsis",
            "Screen deteriorating patients for sepsis when the early warning score "
            "(NEWS2) rises, escalate to a doctor, and give intravenous antibiotics within "
            "one hour when sepsis is suspected.",
        ),
    ],
}

PAIRING: dict[str, list[str]] = {
    slug: [f"demo-{slug}-{k}" for k in range(1, len(items) + 1)] for slug, items in _TEXTS.items()
}
"""Planted truth: theme slug -> ids of the recommendations written for it."""


def demo_recommendations() -> list[Recommendation]:
    """The synthetic recommendation set, one source document per theme."""
    out = []
    for slug, items in _TEXTS.items():
        for k, (title, text) in enumerate(items, start=1):
            out.append(
                Recommendation(
                    id=f"demo-{slug}-{k}",
                    source=SOURCE,
                    text=text,
                    year=2025,
                    number=f"{slug}-{k}",
                    title=title,
                    tags=("synthetic", slug),
                    set_name="demo_recommendations",
                    document=f"demo-{slug}",
                )
            )
    return out


def write_demo_recommendations(path: Path) -> Path:
    """Write the set as a YAML file that `themes recommendations import` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [
        {
            "id": r.id,
            "source": r.source,
            "year": r.year,
            "number": r.number,
            "title": r.title,
            "text": r.text,
            "tags": list(r.tags),
        }
        for r in demo_recommendations()
    ]
    note = "# SYNTHETIC demo recommendations written for the demo's planted themes.\n"
    path.write_text(note + yaml.safe_dump({"recommendations": entries}, sort_keys=False))
    return path
