"""The direction of dependencies (docs/ARCHITECTURE.md): nothing below `api/` imports Flask, and the
service container every layer reads is typed.

The programs are on top and may import anything: `app.py` (the service), `preflight.py` and the
benchmarks in `bench/`, which reuse the service's wiring. The web layer is `api/` and auth's Flask glue: the `flask users` CLI (auth/cli.py), the
route guards (auth/decorators.py), the JWT set-up and its failure answers (auth/tokens.py) and the
login rate limits and proxy trust (auth/limiter.py). Those four are Flask by nature (flask-jwt-extended,
flask-limiter, click through flask.cli) and stay next to the users they guard; they are checked
instead to import nothing from `api/` and to be imported by the web layer alone. Everything else
(engine, runtime, oms, risk, brokers, market data, monitoring, ledger, backtest, the rest of auth,
...) must not import Flask, a Flask extension, werkzeug beyond its password hashing
(`werkzeug.security`, in auth/users.py), a web module or a program.
"""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import engine.services
from engine.services import Services

ROOT = Path(__file__).resolve().parents[1]
AUTH_WEB = frozenset({"auth.cli", "auth.decorators", "auth.limiter", "auth.tokens"})
PROGRAMS = frozenset({"app", "preflight"})
SKIP_DIRS = frozenset({"tests", "docs", "logs", "scripts", "systemd"})


def _is_web(module: str) -> bool:
    """The web layer or a program: what nothing below the API may import."""
    return (module == "api" or module.startswith("api.") or module in AUTH_WEB or module in PROGRAMS
            or module == "bench" or module.startswith("bench."))


def _modules() -> dict[str, Path]:
    """Every module of the project (not its tests): dotted name -> file."""
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0].startswith(".") or parts[0] in SKIP_DIRS or "__pycache__" in parts:
            continue
        name = ".".join(parts)[: -len(".py")]
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement anywhere in the file, including those
    inside functions and `if TYPE_CHECKING:` blocks; `from x import y` yields x and x.y."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def _forbidden_below_api(imported: str) -> bool:
    top = imported.split(".")[0]
    if top == "flask" or top.startswith("flask_"):
        return True
    if top == "werkzeug":
        return not (imported == "werkzeug" or imported.startswith("werkzeug.security"))
    return _is_web(imported)


def test_the_walk_sees_the_layers_it_checks() -> None:
    modules = _modules()
    for expected in ("runtime", "engine.services", "engine.supervisor", "monitoring.status", "auth.users",
                     "api.services", "app", "auth.tokens"):
        assert expected in modules


def test_nothing_below_the_api_imports_flask_or_a_web_module() -> None:
    offences = [f"{path.relative_to(ROOT)}:{line} imports {imported}"
                for module, path in _modules().items() if not _is_web(module)
                for line, imported in _imports(module, path) if _forbidden_below_api(imported)]
    assert offences == []


def test_auths_flask_glue_imports_nothing_from_the_api() -> None:
    modules = _modules()
    offences = [f"{modules[m].relative_to(ROOT)}:{line} imports {imported}"
                for m in sorted(AUTH_WEB) for line, imported in _imports(m, modules[m])
                if imported == "api" or imported.startswith("api.") or imported in PROGRAMS]
    assert offences == []


def test_the_trading_side_loads_without_flask() -> None:
    """What the AST walk says, checked on the interpreter: every module below the API imports
    without Flask or any web module being loaded."""
    below = sorted(m for m in _modules() if not _is_web(m))
    code = ("import importlib, sys\n"
            f"for name in {below!r}:\n"
            "    importlib.import_module(name)\n"
            "web = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'api', 'app')\n"
            "             or m.split('.')[0].startswith('flask_'))\n"
            "print(','.join(web))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


# ---------------------------------------------------------------------------- the typed container
def _type_checking_names() -> dict[str, object]:
    """The names engine/services.py imports for annotations only, imported for real here."""
    tree = ast.parse(Path(engine.services.__file__).read_text(encoding="utf-8"))
    namespace: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            exec(compile(ast.Module(body=node.body, type_ignores=[]), "<type-checking>", "exec"), namespace)
    namespace.pop("__builtins__", None)
    return namespace


def _hints() -> dict[str, object]:
    return typing.get_type_hints(Services, globalns={**vars(engine.services), **_type_checking_names()})


def _mentions_any(hint: object) -> bool:
    return hint is typing.Any or any(_mentions_any(arg) for arg in typing.get_args(hint))


def test_every_field_of_the_service_container_has_a_real_type() -> None:
    hints = _hints()
    assert set(hints) == {f.name for f in dataclasses.fields(Services)}
    assert [name for name, hint in hints.items() if _mentions_any(hint)] == []
    assert [name for name, hint in hints.items() if typing.get_origin(hint) is dict] == []  # no bag of extras


@pytest.mark.parametrize(("field", "module", "cls"), [
    ("engine", "engine.supervisor", "StrategySupervisor"),
    ("orders", "oms.order_manager", "OrderManager"),
    ("brokers", "brokers.registry", "BrokerRegistry"),
    ("market_data", "market_data.service", "MarketDataService"),
    ("risk", "risk.engine", "RiskEngine"),
    ("backtests", "backtest.jobs", "BacktestJobs"),
    ("runtime", "runtime", "TradingRuntime"),
    ("halts", "runtime", "Halts"),
    ("alerter", "monitoring.alerts", "Alerter"),
    ("metrics", "monitoring.metrics", "Metrics"),
    ("ledger", "ledger.trades", "Ledger"),
    ("audit", "monitoring.audit", "AuditLog"),
    ("instance_lock", "store.instance_lock", "InstanceLock"),
    ("status", "monitoring.status", "StatusBuilder"),
])
def test_optional_components_are_their_class_or_none(field: str, module: str, cls: str) -> None:
    expected = getattr(__import__(module, fromlist=[cls]), cls)
    assert _hints()[field] == expected | None


def test_the_container_refuses_a_name_it_does_not_declare(settings, fake_store) -> None:
    from auth.users import UserStore
    from store.tickers import TickerStore

    services = Services(settings=settings, store=fake_store, users=UserStore(fake_store),
                        tickers=TickerStore(fake_store))
    with pytest.raises(AttributeError):
        services.extras = {}  # type: ignore[attr-defined]
    assert services.time_ns() > 0 and isinstance(services.time_ns, types.BuiltinFunctionType)
