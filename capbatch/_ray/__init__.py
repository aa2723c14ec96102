"""capbatch on Ray Data: the cluster's one budget and one journal (actors), the workers
that solve batches with the core's ``TaskSolver`` and ``BatchRunner``, and the run
behind ``capbatch run --engine ray``. Ray is imported only inside these modules' functions
and by ``capbatch.ray``; ``import capbatch`` never imports it (docs/architecture.md,
"Scale")."""
