"""`python -m services.pipeline.worker`: a worker (as `devmesh pipeline worker`)."""

from services.pipeline.worker.main import main

raise SystemExit(main())
