"""Airflow reads its home and database URL when first imported: point it at a temporary home before any test
module can import it (tests/airflow_support.py explains the rest)."""
from tests import airflow_support

airflow_support.setup_environment()

# Modules that take minutes go to the workers first (pytest-xdist --dist loadfile hands out modules in collection
# order): started last, the slowest would run alone on one worker while the other waits.
SLOW_FIRST = ("tests/stack/", "tests/e2e/test_real_helm.py", "tests/builder/", "tests/e2e/test_waves.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the order inside a module, and of the other modules, is kept
