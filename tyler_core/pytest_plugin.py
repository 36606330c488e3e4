"""The ``tyler`` pytest plugin: the ``--tyler-url`` option for the conformance suite.

pytest loads this module in every run of an environment where tyler-threadstore is installed
(it is a ``pytest11`` entry point), so it imports nothing but pytest and the standard library: a
missing optional dependency here would break everybody's test run, not just ours. The suite
itself (:mod:`tyler_core.testing`) needs the ``testing`` extra and is imported only by tests.

Usage::

    pytest --pyargs tyler_core.testing --tyler-url "mydb://localhost/test"

``--tyler-url`` is repeatable (the suite runs once per URL); the ini key ``tyler_urls`` (one URL
per line) is used when the option is not given.
"""

from __future__ import annotations

import pytest

__all__ = ["URLS_INI", "URL_OPTION", "configured_urls"]

#: The ``dest`` of ``--tyler-url`` on ``config.option``.
URL_OPTION = "tyler_urls"
#: The ini key that lists store URLs, one per line.
URLS_INI = "tyler_urls"

# The suite is shipped inside the package; rewrite its asserts so failures show values. This
# runs before any test module imports it (plugins load first), so pytest does not warn.
pytest.register_assert_rewrite("tyler_core.testing")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--tyler-url`` (repeatable) and the ``tyler_urls`` ini key."""
    group = parser.getgroup("tyler", "tyler-threadstore conformance suite")
    group.addoption(
        "--tyler-url",
        action="append",
        dest=URL_OPTION,
        default=[],
        metavar="URL",
        help="store URL to run tyler_core.testing.ThreadStoreConformance against (repeatable)",
    )
    parser.addini(
        URLS_INI,
        type="linelist",
        default=[],
        help="store URLs for the tyler conformance suite, one per line (if --tyler-url is absent)",
    )


def configured_urls(config: pytest.Config) -> list[str]:
    """The store URLs given by ``--tyler-url``, else by the ``tyler_urls`` ini key.

    Returns an empty list when the plugin is not loaded (``-p no:tyler``) or nothing was given.
    """
    urls = list(getattr(config.option, URL_OPTION, None) or [])
    if not urls:
        try:
            urls = [str(u) for u in config.getini(URLS_INI)]
        except ValueError:  # the plugin was not loaded, so the ini key does not exist
            urls = []
    # Keep the order, drop repeats: each URL runs the suite once.
    return list(dict.fromkeys(u.strip() for u in urls if u.strip()))
