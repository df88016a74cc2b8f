"""`ai-enhance batch`: a recipe applied to many files, by the running backend (local engine) or
on a Ray cluster.  Layer 6, beside the server: it uses the engine and the layers below, never the
CLI.  Modules: inputs (what to process), files (decode/encode with metadata, atomic writes),
composite (GIMP's layer compositing), apply (one recipe on one image), runners (the model: Client
or in-process Engine), manifest (resume), progress (bar and summary), run (the local engine),
ray_engine (Ray Data)."""
