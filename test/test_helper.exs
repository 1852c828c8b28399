# The multi-node tests need this node distributed. It goes distributed here, before the
# test files compile: a node that turns distributed while the parallel compiler runs
# leaves the compiler's processes behind a node name that no longer exists.
Symbiont.Cluster.ensure_distributed!()
# Durable agents' journals of this run (config/test.exs).
ExUnit.after_suite(fn _ -> File.rm_rf(Symbiont.Journal.data_dir()) end)
ExUnit.start()
