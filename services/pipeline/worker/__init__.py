"""`devmesh pipeline worker`: a process that takes jobs from the run queues and runs them."""
