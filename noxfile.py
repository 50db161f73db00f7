"""Developer sessions. The README's two commands (scripts/demo, scripts/test) need no nox."""

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


# The Pythons the suite is known to pass on; nox skips those not installed.
PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Every test against the local mail stack (started if needed)."""
    session.install("-e", ".[dev]")
    session.run("scripts/mailstack", "up", external=True)
    session.run("pytest", *session.posargs, env={"MAILKIT_TEST_ENVIRONMENT": "1"})


@nox.session(python=PYTHONS)
def unit(session: nox.Session) -> None:
    """Pure-logic tests only: no servers needed."""
    session.install("-e", ".[dev]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job against the local stack: send, read back over IMAP, download over POP3."""
    session.install("-e", ".")
    session.run("scripts/demo", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the raw libraries and tools (bench/); prints ratios."""
    session.install("-e", ".[dev]")
    session.run("scripts/mailstack", "up", external=True)
    for script in sorted(__import__("pathlib").Path("bench").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
