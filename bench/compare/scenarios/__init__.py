"""One module per scenario of run.py. Each has a `run`-style entry taking the `harness.bench.Bench` (it stores its
rows in `bench.results`) and a `render(res) -> list[str]` giving its part of the report (report.py assembles them).

- fsync: the disk's sync latency, the ceiling on sequential durable commits
- b1: burn-down (claim -> complete) at FULL and NORMAL, 1..8 workers; b1_next: the same with complete-and-claim
  in one transaction (`complete --next`), interleaved with B1's cells
- b2_chaos: workers SIGKILLed while holding tasks; b2_stall: a worker SIGSTOPped past its lease, then SIGCONTed
- b3: an observer reading the board summary while workers burn and a writer adds
- physical: fsyncs per task (strace) against the fsync ceiling
- floor: bench/floor.py (the cheapest SQLite commit, our write set without the domain layer) against the peers
"""
