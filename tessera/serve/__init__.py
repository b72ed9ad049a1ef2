"""`tessera serve`: HTTP API, persistent job queue, worker processes and a web page.

app.py         routes (FastAPI), auth, limits, the page
db.py          jobs and keys in SQLite (WAL), leases for exactly-once completion
worker.py      worker processes with a warm pipeline; the only place that calls the pipeline
supervisor.py  starts and restarts workers, requeues expired leases, deletes old results
uploads.py     upload checks (type, size, decodable, pixels, frames)
keys.py        API keys, stored hashed
launch.py      start `tessera serve` as a child process and wait until it answers
static/        the page (plain HTML + JS)
"""
