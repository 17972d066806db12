"""The application's tables: what the program creates, as data.

Column definitions are SQL written here in the code, never taken from stack
config; table and column names are quoted with psycopg when used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERIAL_TYPES = ("smallserial", "serial", "bigserial", "serial2", "serial4", "serial8")


@dataclass(frozen=True)
class TableSpec:
    name: str
    """Table name (a plain lower-case identifier)."""
    columns: tuple[tuple[str, str], ...]
    """(column name, SQL type and constraints) pairs, in order."""
    sample_columns: tuple[str, ...] = ()
    """Columns filled by `sample_rows` (the dev stack only)."""
    sample_rows: tuple[tuple, ...] = field(default=())
    """Rows inserted on the dev stack (the missing ones)."""
    sensitive: bool = False
    """No application role may be granted anything on it (settings refuse it)."""

    @property
    def sequences(self) -> tuple[str, ...]:
        """The sequences PostgreSQL creates for the serial columns (named
        `<table>_<column>_seq`): INSERT needs USAGE on them."""
        return tuple(
            f"{self.name}_{column}_seq"
            for column, definition in self.columns
            if definition.split()[0].lower() in SERIAL_TYPES
        )


WEEKLY_METRICS_REPORTING = TableSpec(
    name="weekly_metrics_reporting",
    columns=(
        ("id", "serial PRIMARY KEY"),
        ("week_ending", "TIMESTAMP NOT NULL"),
        ("product_downloads", "INT NOT NULL CHECK (product_downloads >= 0)"),
        ("github_stars", "INT NOT NULL CHECK (github_stars >= 0)"),
        ("twitter_followers", "INT NOT NULL CHECK (twitter_followers >= 0)"),
    ),
    sample_columns=("week_ending", "product_downloads", "github_stars", "twitter_followers"),
    sample_rows=(
        ("2022-02-25", 110005, 2300, 17500),
        ("2022-03-04", 116097, 2600, 20300),
        ("2022-03-11", 129000, 3300, 22800),
    ),
)

EMPLOYEE_SALARY = TableSpec(
    name="employee_salary",
    columns=(
        ("emp_no", "INT NOT NULL PRIMARY KEY"),
        ("salary", "int NOT NULL"),
        ("name", "VARCHAR(30) NOT NULL"),
        ("hire_date", "DATE NOT NULL"),
    ),
    sample_columns=("emp_no", "salary", "name", "hire_date"),
    sample_rows=(
        (123, 85000, "best avocado", "2020-01-25"),
        (124, 65000, "avg avocado", "2020-01-18"),
        (127, 50000, "ok avocado", "2020-01-29"),
    ),
    sensitive=True,
)

APP_TABLES: tuple[TableSpec, ...] = (WEEKLY_METRICS_REPORTING, EMPLOYEE_SALARY)
