"""Write-through replication of local boards to a central PostgreSQL hub (`hermes kanban sync`, `hermes kanban hub`).

`outbox` (the local side: board id, batches, checkpoint), `lease` (single-flight per board and hub), `sync` (the
loop: batches, doorbell, signals, retries), `all_boards` (one sync process per board), `fleet` (reading the hub).
The hub's SQL is in store/hub/.
"""
