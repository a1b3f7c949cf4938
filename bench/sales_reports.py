"""Pipeline and forecast report latency at 10k and 200k deals, against raw SQL over deals.

    python bench/sales_reports.py [--runs N] [--no-postgres]

Each report is called through the Flask test client (the real endpoint: auth, parameter
validation, SQL over the running totals, JSON). The baseline is the same aggregation
written straight over the deals table (no running totals), on the same engine. Runs on
a fresh SQLite file, then on PostgreSQL in a database of its own (`crm_bench_sales`,
dropped afterwards) at CRM_BENCH_POSTGRES_URL, CRM_TEST_POSTGRES_URL or the local default.
The goal: the endpoints grow less than 2x from 10k to 200k deals.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import postgres_database  # noqa: E402

from services.sales import pipelines, totals  # noqa: E402
from services.sales.app import create_app  # noqa: E402
from services.sales.models import Deal  # noqa: E402
from shared.auth import Principal, issue_service_token  # noqa: E402
from shared.db import Database  # noqa: E402

SIZES = (10_000, 200_000)
OWNERS = [str(uuid.UUID(int=n + 1)) for n in range(8)]
BENCH_DATABASE = "crm_bench_sales"
FORECAST = "/api/v1/reports/forecast"

BASELINE_PIPELINE = sa.text(
    "SELECT stage_id, currency, count(*), sum(amount) FROM deals"
    " WHERE status = 'open' AND pipeline_id = :pipeline GROUP BY stage_id, currency"
)


def baseline_forecast(dialect: str) -> list[sa.TextClause]:
    """The forecast straight over deals: open by close month, won by month closed."""
    if dialect == "postgresql":
        close = "to_char(expected_close_date, 'YYYY-MM')"
        closed = "to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM')"
    else:
        close, closed = "strftime('%Y-%m', expected_close_date)", "strftime('%Y-%m', closed_at)"
    open_deals = sa.text(
        f"SELECT {close} AS m, currency, count(*), sum(amount) FROM deals"
        " WHERE status = 'open' AND (expected_close_date IS NULL"
        " OR expected_close_date >= :first AND expected_close_date < :end)"
        " GROUP BY m, currency"
    )
    won = sa.text(
        f"SELECT {closed} AS m, currency, count(*), sum(amount) FROM deals"
        " WHERE status = 'won' AND closed_at >= :first_at AND closed_at < :end_at"
        " GROUP BY m, currency"
    )
    return [open_deals, won]


def deal_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Realistic deals: 8 owners, EUR and USD, ~30% open over the stages and the next
    12 months (5% without a close date), the rest won or lost over the past two years."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    stages = [stage_id for stage_id, _name, _probability in pipelines.DEFAULT_STAGES]
    rows = []
    for number in range(count):
        is_open = rng.random() < 0.3
        closed_at = None if is_open else now - timedelta(seconds=rng.randint(0, 730 * 86400))
        created_at = (closed_at or now) - timedelta(seconds=rng.randint(86400, 180 * 86400))
        close_date = now.date() + timedelta(days=rng.randint(0, 364)) if is_open else None
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "name": f"Deal {number}",
                "pipeline_id": pipelines.DEFAULT_PIPELINE_ID,
                "stage_id": rng.choice(stages),
                "amount": Decimal(rng.randint(10_000, 5_000_000)).scaleb(-2),
                "currency": rng.choice(("EUR", "EUR", "USD")),
                "expected_close_date": close_date if rng.random() > 0.05 else None,
                "status": "open" if is_open else rng.choice(("won", "lost")),
                "owner_id": rng.choice(OWNERS),
                "stage_changed_at": created_at,
                "closed_at": closed_at,
                "version": 1,
                "created_at": created_at,
                "updated_at": closed_at or created_at,
            }
        )
    return rows


def add_deals(db: Database, count: int, seed: int) -> float:
    """Bulk insert `count` deals in chunks, then rebuild the running totals; seconds."""
    started = time.perf_counter()
    rows = deal_rows(count, seed)
    with db.engine.begin() as connection:
        for start in range(0, count, 10_000):
            connection.execute(sa.insert(Deal.__table__), rows[start : start + 10_000])
    with db.session() as session:
        totals.rebuild(session)
    if db.is_postgres:
        # What autovacuum does to a settled table: statistics, and the visibility map
        # that lets the covering index answer the won-deals part without the table.
        autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def timed(call: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median and 95th percentile of `runs` calls, in milliseconds (after 3 warm-ups)."""
    for _ in range(3):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), statistics.quantiles(samples, n=20)[18]


def endpoint(client: Any, path: str) -> Callable[[], Any]:
    def call() -> Any:
        response = client.get(path)
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}: {response.get_data()}")
        return response.get_json()

    return call


def baseline(db: Database, statements: list[sa.TextClause], params: dict) -> Callable[[], Any]:
    def call() -> Any:
        with db.engine.connect() as connection:
            return [connection.execute(statement, params).all() for statement in statements]

    return call


def months_after(first: date, months: int) -> date:
    """The first day of the month `months` after the month of `first`."""
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def baseline_params(dialect: str) -> dict[str, Any]:
    """The default forecast range (this month and the next five) and the default pipeline."""
    first = datetime.now(UTC).date().replace(day=1)
    end = months_after(first, 6)
    first_at, end_at = (datetime(d.year, d.month, 1, tzinfo=UTC) for d in (first, end))
    if dialect == "sqlite":  # timestamps are stored as text there: compare text
        first_at, end_at = (moment.strftime("%Y-%m-%d %H:%M:%S") for moment in (first_at, end_at))
    return {
        "first": first,
        "end": end,
        "first_at": first_at,
        "end_at": end_at,
        "pipeline": pipelines.DEFAULT_PIPELINE_ID,
    }


def measure(app: Any, db: Database, runs: int) -> dict[str, tuple[float, float]]:
    """The four figures at the current size: two endpoints, two baselines."""
    client = app.test_client()
    settings = app.extensions["crm.settings"]
    # The app is called directly: the token the gateway would forward.
    token = issue_service_token(settings, Principal(OWNERS[0], "viewer", "bench@example.com"))
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    dialect = db.engine.dialect.name
    params = baseline_params(dialect)
    future = months_after(params["first"], 1).strftime("%Y-%m")
    pipeline_call = endpoint(client, "/api/v1/reports/pipeline")
    baseline_call = baseline(db, [BASELINE_PIPELINE], params)
    open_count = sum(row[2] for row in baseline_call()[0])
    if pipeline_call()["totals"]["count"] != open_count:
        raise SystemExit("the pipeline report and the baseline disagree")
    return {
        "pipeline endpoint": timed(pipeline_call, runs),
        "pipeline baseline": timed(baseline_call, runs),
        "forecast endpoint": timed(endpoint(client, FORECAST), runs),
        "forecast baseline": timed(baseline(db, baseline_forecast(dialect), params), runs),
        # From next month on: no deal has been won yet, so only the running totals are read.
        "forecast, future": timed(endpoint(client, f"{FORECAST}?from={future}"), runs),
    }


def run(kind: str, url: str, runs: int) -> None:
    """Both sizes on one database (grown from 10k to 200k deals) and the ratios."""
    app = create_app({"database_url": url, "create_tables": True, "log_level": "WARNING"})
    db: Database = app.extensions["crm.db"]
    results = {}
    try:
        inserted = 0
        for size in SIZES:
            seconds = add_deals(db, size - inserted, seed=size)
            inserted = size
            print(f"{kind}: {size:,} deals ready (insert + totals rebuild {seconds:.1f} s)")
            results[size] = measure(app, db, runs)
            for name, (median, p95) in results[size].items():
                figures = f"median {median:7.2f} ms  p95 {p95:7.2f} ms"
                print(f"{kind}: {size:>7,} deals  {name:<18} {figures}")
    finally:
        db.dispose()
    print_ratios(kind, results)


def print_ratios(kind: str, results: dict[int, dict[str, tuple[float, float]]]) -> None:
    small, large = SIZES
    for name in results[small]:
        growth = results[large][name][0] / results[small][name][0]
        goal = " (goal < 2x)" if "baseline" not in name else ""
        print(f"{kind}: growth {large // 1000}k/{small // 1000}k {name}: {growth:.2f}x{goal}")
    for report in ("pipeline", "forecast"):
        for size in SIZES:
            ratio = results[size][f"{report} endpoint"][0] / results[size][f"{report} baseline"][0]
            print(f"{kind}: {report} endpoint / baseline at {size // 1000}k: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        run("sqlite", f"sqlite:///{directory}/sales.db", args.runs)
    if not args.no_postgres:
        with postgres_database(BENCH_DATABASE) as url:
            if url is not None:
                run("postgresql", url, args.runs)
    print(f"total bench time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
