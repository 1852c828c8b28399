# The multi-node tests need this node distributed. It goes distributed here, before the
# test files compile: a node that turns distributed while the parallel compiler runs
# leaves the compiler's processes behind a node name that no longer exists.
Symbiont.Cluster.ensure_distributed!()
ExUnit.start()
