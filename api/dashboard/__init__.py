"""The cost/quality dashboard: JSON figures over the request log, and the page that draws them.

`api.routes.dashboard` serves both; the figures are computed in `aggregate` (pure functions over
records), `reports` reads the `coe eval` reports, `sources` says what else the dashboard reads
(budgets per key, the experts' load). The page lives in `static/` beside this file.
"""

from api.dashboard.service import DashboardService
from api.dashboard.sources import BudgetProvider, KeyBudget, LoadBoard, PoolLoad, StoreBudgets

__all__ = [
    "BudgetProvider",
    "DashboardService",
    "KeyBudget",
    "LoadBoard",
    "PoolLoad",
    "StoreBudgets",
]
