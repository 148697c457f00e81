"""The job domain: what the API and the workers share, with no HTTP in it.

Statuses and value types (`status`, `values`), the errors services raise (`errors`), the
ORM models and engines (`db`), who runs a job (`leases`) and where datasets live
(`dataset_store`). Routers, schemas and `app.errors` sit on top and map it to HTTP; the
workers import it and never FastAPI (tests/test_architecture.py).
"""
